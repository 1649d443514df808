"""``FeedbackSignal`` across processes and replicas, on Redis pub/sub.

Why pub/sub and not Streams: the signal is only a hint (the learner also polls the log), so
at-most-once delivery is what we need and all we pay for. Pub/sub keeps nothing in Redis — no
stream to trim, no consumer groups, no per-replica read offsets to track or to clean up after a
replica dies — and every subscriber sees every message, which is the fan-out we want (each
replica decides which experiments it learns). What Streams would add, replay of the messages
sent while a listener was disconnected, the periodic poll of the log already covers.

Layout: one channel per prefix, ``<prefix>:feedback``; a message is ``"<experiment_id> <origin>"``
where ``origin`` names the sending instance (a bare ``"<experiment_id>"``, e.g. from
``redis-cli PUBLISH``, is accepted too). ``notify`` marks the experiment pending in this instance
directly — in-process waiters wake at once, even while Redis is down — and then publishes; the
instance ignores its own echo, so notifications coalesce exactly as in ``LocalSignal``. A
background thread per instance subscribes and feeds the other instances' messages into a
``threading.Condition``. When its connection drops (a Redis restart, a network cut) it logs one
warning, reconnects with exponential backoff, and logs once more when it is back; notifications
published meanwhile are lost, which delays learning by at most the learner's poll interval.

The channel is not a key, so it carries no hash tag; under Redis Cluster plain ``PUBLISH``
(sent to any node) reaches the subscribers on every node, and the listener subscribes on the
node that owns the channel name's slot (``RedisCluster.pubsub``). If that node goes away, its
connection closes and the listener reconnects as above, to whichever node owns the slot then.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import uuid
from collections.abc import Collection
from typing import Any

import redis
from redis.backoff import ExponentialWithJitterBackoff
from redis.retry import Retry

from .errors import Unavailable
from .redis_client import UNAVAILABLE_ERRORS, Client, client_from_url
from .signal import FeedbackSignal
from .signal_local import LocalSignal

log = logging.getLogger("banditd.signal")

_POLL_S = 0.2  # how often the listener looks at its stop flag while idle
_BACKOFF_MIN_S = 0.1
_BACKOFF_MAX_S = 5.0
_CONNECTION_ERRORS = UNAVAILABLE_ERRORS


def _client_from_url(url: str, *, socket_timeout: float) -> Client:
    """A client that fails fast: bounded connect/read timeouts and one quick retry, so a call
    against a dead server raises within about two socket timeouts instead of hanging."""
    return client_from_url(
        url,
        socket_timeout=socket_timeout,
        socket_connect_timeout=socket_timeout,
        health_check_interval=15,  # the listener PINGs an idle connection to notice a dead one
        retry=Retry(ExponentialWithJitterBackoff(base=0.01, cap=0.1), retries=1),
    )


class RedisSignal(FeedbackSignal):
    """One instance per process (replica); see the module docstring for the protocol.

    ``client`` should have socket timeouts (``from_url`` sets them): ``notify`` raises
    ``Unavailable`` on a connection error and must not hang. The constructor waits up to
    ``ready_timeout`` seconds for the subscription, so notifications sent after it returns
    reach this instance; if Redis is down it returns anyway and the listener keeps retrying.
    """

    def __init__(
        self, client: Client, *, prefix: str = "banditd", ready_timeout: float = 2.0
    ) -> None:
        self._client = client
        self._owns_client = False
        self.channel = f"{prefix}:feedback"
        self._origin = uuid.uuid4().hex[:16]
        # Waiting and coalescing are LocalSignal's; Redis only carries notifies between processes.
        self._local = LocalSignal()
        self._stop = threading.Event()
        self._subscribed = threading.Event()
        self._thread = threading.Thread(
            target=self._listen, name=f"signal-{self.channel}", daemon=True
        )
        self._thread.start()
        if ready_timeout > 0:
            self._subscribed.wait(ready_timeout)

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        prefix: str = "banditd",
        socket_timeout: float = 2.0,
        ready_timeout: float = 2.0,
    ) -> RedisSignal:
        """Connect to ``url`` (``redis://host:port/db``, or a cluster: ``redis_client``);
        ``close`` also closes this client."""
        sig = cls(
            _client_from_url(url, socket_timeout=socket_timeout),
            prefix=prefix,
            ready_timeout=ready_timeout,
        )
        sig._owns_client = True
        return sig

    # --- FeedbackSignal ---------------------------------------------------------------------

    def notify(self, experiment_id: int) -> None:
        self._local.notify(experiment_id)
        try:
            self._client.publish(self.channel, f"{experiment_id} {self._origin}")
        except _CONNECTION_ERRORS as e:
            raise Unavailable(f"cannot publish to Redis channel {self.channel!r}: {e}") from e

    def wait(self, timeout: float, experiment_ids: Collection[int] | None = None) -> set[int]:
        return self._local.wait(timeout, experiment_ids)

    def close(self) -> None:
        self._local.close()
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=2 * _POLL_S + 1.0)
        if self._owns_client:
            self._client.close()

    # --- introspection (tests, health) ------------------------------------------------------

    @property
    def subscribed(self) -> bool:
        """Whether the listener is currently subscribed (False while reconnecting)."""
        return self._subscribed.is_set()

    def wait_subscribed(self, timeout: float) -> bool:
        return self._subscribed.wait(timeout)

    # --- listener ---------------------------------------------------------------------------

    def _on_message(self, data: Any) -> None:
        text = data.decode("utf-8", "replace") if isinstance(data, bytes) else str(data)
        parts = text.split()
        try:
            experiment_id = int(parts[0])
        except (IndexError, ValueError):
            log.debug("ignoring malformed message %r on %s", text, self.channel)
            return
        if len(parts) > 1 and parts[1] == self._origin:
            return  # our own notify, already delivered locally
        self._local.notify(experiment_id)

    def _listen(self) -> None:
        pubsub: Any = None
        backoff = _BACKOFF_MIN_S
        outage = False  # warned about a failure that has not yet recovered
        while not self._stop.is_set():
            try:
                if pubsub is None:
                    pubsub = self._client.pubsub()
                    pubsub.subscribe(self.channel)
                msg = pubsub.get_message(timeout=_POLL_S)
                if msg is None:
                    continue
                kind = msg["type"]
                kind = kind.decode() if isinstance(kind, bytes) else kind
                if kind == "subscribe":
                    self._subscribed.set()
                    backoff = _BACKOFF_MIN_S
                    if outage:
                        log.info("feedback signal: resubscribed to %s", self.channel)
                        outage = False
                elif kind == "message":
                    self._on_message(msg["data"])
            except Exception as e:  # the listener must outlive any failure
                self._subscribed.clear()
                if not outage:
                    expected = isinstance(e, (*_CONNECTION_ERRORS, redis.RedisError))
                    log.warning(
                        "feedback signal: not subscribed to %s (%s: %s); reconnecting with "
                        "backoff, notifications from other replicas are delayed meanwhile",
                        self.channel,
                        e.__class__.__name__,
                        e,
                        exc_info=not expected,  # a traceback only for what looks like a bug
                    )
                    outage = True
                else:
                    log.debug("feedback signal: reconnect to %s failed: %s", self.channel, e)
                self._drop(pubsub)
                pubsub = None
                self._stop.wait(backoff)
                backoff = min(2 * backoff, _BACKOFF_MAX_S)
        self._subscribed.clear()
        self._drop(pubsub)

    @staticmethod
    def _drop(pubsub: Any) -> None:
        if pubsub is not None:
            with contextlib.suppress(Exception):  # closing a broken connection may fail too
                pubsub.close()
