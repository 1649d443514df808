"""Feedback signal contract (in-process and Redis pub/sub) and the Redis learner lease.

Redis tests run against the real server at 127.0.0.1:6379, each under its own key prefix whose
keys are deleted afterwards; they skip only if that server is down."""

from __future__ import annotations

import contextlib
import logging
import pathlib
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator

import pytest
import redis
from banditd.store.errors import Unavailable
from banditd.store.lease import RedisLease
from banditd.store.signal import FeedbackSignal
from banditd.store.signal_local import LocalSignal
from banditd.store.signal_redis import RedisSignal

REDIS_URL = "redis://127.0.0.1:6379/0"
_VENV_PYTHON = pathlib.Path(__file__).resolve().parent.parent / ".venv" / "bin" / "python"
PYTHON = str(_VENV_PYTHON) if _VENV_PYTHON.exists() else sys.executable


def _redis_down_reason() -> str | None:
    try:
        client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2, socket_timeout=2)
        client.ping()
        client.close()
    except redis.RedisError as e:
        return f"Redis at {REDIS_URL} unreachable ({e.__class__.__name__}: {e})"
    return None


REDIS_DOWN = _redis_down_reason()
needs_redis = pytest.mark.skipif(REDIS_DOWN is not None, reason=REDIS_DOWN or "")


def _dead_url() -> str:
    """A Redis URL on a local port nobody listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"redis://127.0.0.1:{port}/0"


@pytest.fixture
def prefix() -> Iterator[str]:
    """A key prefix of this test alone; every key under it is deleted afterwards."""
    p = f"banditd-test-{uuid.uuid4().hex[:12]}"
    yield p
    if REDIS_DOWN is None:
        client = redis.Redis.from_url(REDIS_URL, socket_timeout=5)
        keys = list(client.scan_iter(match="{" + p + ":*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()


@pytest.fixture
def make_redis_signal(prefix: str) -> Iterator[Callable[..., RedisSignal]]:
    made: list[RedisSignal] = []

    def make(**kw: object) -> RedisSignal:
        if REDIS_DOWN:
            pytest.skip(REDIS_DOWN)
        kw.setdefault("prefix", prefix)
        sig = RedisSignal.from_url(REDIS_URL, **kw)  # type: ignore[arg-type]
        made.append(sig)
        return sig

    yield make
    for sig in made:
        sig.close()


@pytest.fixture(params=["local", "redis"])
def signal(
    request: pytest.FixtureRequest, make_redis_signal: Callable[..., RedisSignal]
) -> Iterator[FeedbackSignal]:
    if request.param == "local":
        sig: FeedbackSignal = LocalSignal()
    else:
        sig = make_redis_signal()
        assert sig.subscribed  # the constructor waited for the subscription
    yield sig
    sig.close()


def _wait_in_thread(
    sig: FeedbackSignal, timeout: float, ids: list[int] | None = None
) -> tuple[threading.Thread, list[set[int]]]:
    got: list[set[int]] = []
    waiter = threading.Thread(target=lambda: got.append(sig.wait(timeout, ids)), daemon=True)
    waiter.start()
    time.sleep(0.05)  # let it block
    return waiter, got


# --- signal contract, both backends ---------------------------------------------------------------


def test_signal_notify_then_wait_returns_it_once(signal: FeedbackSignal) -> None:
    signal.notify(1)
    signal.notify(1)
    signal.notify(2)
    t0 = time.monotonic()
    assert signal.wait(5.0) == {1, 2}
    assert time.monotonic() - t0 < 1.0
    # Coalesced and consumed; for Redis the echo of our own publishes (which arrives within
    # this wait) must not bring them back.
    assert signal.wait(0.3) == set()


def test_signal_filters_by_experiment_and_keeps_others(signal: FeedbackSignal) -> None:
    signal.notify(2)
    signal.notify(4)
    assert signal.wait(0.05, [1]) == set()  # neither is ours
    assert signal.wait(0.05, [2, 3]) == {2}  # and 2 was kept for its waiter
    assert signal.wait(0.05, []) == set()
    assert signal.wait(0.05) == {4}  # None means any experiment; 2 is gone


def test_signal_times_out_within_bounds(signal: FeedbackSignal) -> None:
    t0 = time.monotonic()
    assert signal.wait(0.15, [9]) == set()
    elapsed = time.monotonic() - t0
    assert 0.15 <= elapsed < 1.0


def test_signal_wakes_a_blocked_waiter(signal: FeedbackSignal) -> None:
    waiter, got = _wait_in_thread(signal, 10.0, [5])
    t0 = time.monotonic()
    signal.notify(6)  # not its experiment: it keeps waiting
    signal.notify(5)
    waiter.join(5.0)
    assert got == [{5}] and time.monotonic() - t0 < 1.0
    assert signal.wait(1.0, [6]) == {6}
    # Consumed once: for Redis, the echo of our own publish (arriving after the waiter woke on
    # the local delivery) must not wake anyone again.
    assert signal.wait(0.3, [5]) == set()


def test_signal_close_wakes_waiters_and_later_waits_return_at_once(
    signal: FeedbackSignal,
) -> None:
    waiter, got = _wait_in_thread(signal, 30.0)
    t0 = time.monotonic()
    signal.close()
    waiter.join(5.0)
    assert not waiter.is_alive() and got == [set()]
    assert time.monotonic() - t0 < 1.5
    signal.notify(1)
    t1 = time.monotonic()
    assert signal.wait(5.0) == set()
    assert time.monotonic() - t1 < 0.5


# --- Redis signal across instances and processes --------------------------------------------------


@needs_redis
def test_redis_signal_reaches_another_replica(
    make_redis_signal: Callable[..., RedisSignal],
) -> None:
    a, b = make_redis_signal(), make_redis_signal()
    other_prefix = make_redis_signal(prefix=f"banditd-test-{uuid.uuid4().hex[:12]}")
    waiter, got = _wait_in_thread(b, 10.0, [7])
    t0 = time.monotonic()
    a.notify(7)
    waiter.join(5.0)
    assert got == [{7}] and time.monotonic() - t0 < 2.0
    assert a.wait(1.0) == {7}  # the sender's own waiters see it too, once
    assert a.wait(0.3) == set()
    assert other_prefix.wait(0.3) == set()  # channels are per prefix


@needs_redis
def test_redis_signal_reaches_across_processes(
    prefix: str, make_redis_signal: Callable[..., RedisSignal]
) -> None:
    sig = make_redis_signal()
    waiter, got = _wait_in_thread(sig, 30.0, [42])
    snippet = (
        "from banditd.store.signal_redis import RedisSignal\n"
        f"s = RedisSignal.from_url({REDIS_URL!r}, prefix={prefix!r}, ready_timeout=0)\n"
        "s.notify(42)\n"
        "s.close()\n"
    )
    proc = subprocess.run([PYTHON, "-c", snippet], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    waiter.join(5.0)
    assert got == [{42}]


@needs_redis
def test_redis_signal_accepts_bare_ids_and_ignores_garbage(
    make_redis_signal: Callable[..., RedisSignal],
) -> None:
    sig = make_redis_signal()
    client = redis.Redis.from_url(REDIS_URL, socket_timeout=5)
    try:
        assert client.publish(sig.channel, "not-an-id") == 1  # exactly our subscriber
        client.publish(sig.channel, "")
        client.publish(sig.channel, "9")  # e.g. redis-cli PUBLISH banditd:feedback 9
    finally:
        client.close()
    assert sig.wait(5.0) == {9}
    assert sig.wait(0.2) == set()


@needs_redis
def test_redis_signal_listener_survives_a_dropped_connection(
    prefix: str, make_redis_signal: Callable[..., RedisSignal]
) -> None:
    name = f"sig-{uuid.uuid4().hex[:12]}"
    client = redis.Redis.from_url(REDIS_URL, socket_timeout=2, client_name=name)
    sig = RedisSignal(client, prefix=prefix)
    sender = make_redis_signal()
    admin = redis.Redis.from_url(REDIS_URL, socket_timeout=5)
    try:

        def pubsub_ids() -> set[int]:
            return {
                int(c["id"])
                for c in admin.client_list()
                if c.get("name") == name and int(c.get("sub", 0)) > 0
            }

        old = pubsub_ids()
        assert len(old) == 1
        for cid in old:
            admin.client_kill_filter(_id=str(cid))  # what a Redis restart looks like to the client
        deadline = time.monotonic() + 8.0
        got: set[int] = set()
        while not got and time.monotonic() < deadline:
            sender.notify(11)  # lost while the listener is down; one gets through after
            got = sig.wait(0.25, [11])
        assert got == {11}
        new = pubsub_ids()
        assert len(new) == 1 and not new & old  # it really reconnected
    finally:
        sig.close()
        client.close()
        admin.close()


class _Proxy:
    """A TCP forwarder to the real Redis that can go down (refusing connections, dropping the
    open ones) and come back on the same port: a Redis restart, as the client sees it."""

    def __init__(self, target: tuple[str, int] = ("127.0.0.1", 6379)) -> None:
        self.target = target
        self.port = 0
        self._server: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()

    def start(self) -> None:
        srv = socket.socket()
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind(("127.0.0.1", self.port))
        srv.listen()
        srv.settimeout(0.05)
        self.port = srv.getsockname()[1]
        self._server = srv
        threading.Thread(target=self._accept, args=(srv,), daemon=True).start()

    def stop(self) -> None:
        srv, self._server = self._server, None
        if srv is not None:
            srv.close()
        with self._lock:
            conns, self._conns = self._conns, []
        for c in conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
            c.close()

    def _accept(self, srv: socket.socket) -> None:
        while self._server is srv:
            try:
                down, _ = srv.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            down.settimeout(None)
            up = socket.create_connection(self.target)
            with self._lock:
                self._conns += [down, up]
            for a, b in ((down, up), (up, down)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := a.recv(65536):
                b.sendall(data)
        for s in (a, b):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)


@needs_redis
def test_redis_signal_listener_survives_a_redis_restart(
    prefix: str,
    make_redis_signal: Callable[..., RedisSignal],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="banditd.signal")
    proxy = _Proxy()
    proxy.start()
    sig = RedisSignal.from_url(f"redis://127.0.0.1:{proxy.port}/0", prefix=prefix)
    sender = make_redis_signal()  # straight to Redis: other replicas keep publishing
    try:
        assert sig.subscribed
        proxy.stop()
        deadline = time.monotonic() + 5.0
        while sig.subscribed and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not sig.subscribed
        time.sleep(0.5)  # down for a while: several refused reconnects, with backoff
        proxy.start()
        deadline = time.monotonic() + 10.0
        got: set[int] = set()
        while not got and time.monotonic() < deadline:
            sender.notify(11)  # lost until the listener is back; one gets through after
            got = sig.wait(0.25, [11])
        assert got == {11} and sig.subscribed
    finally:
        sig.close()
        proxy.stop()
    records = [r for r in caplog.records if r.name == "banditd.signal"]
    warnings = [r for r in records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and not warnings[0].exc_info  # one line per outage, no traceback
    assert any("resubscribed" in r.getMessage() for r in records)


def test_redis_signal_down_raises_unavailable_and_warns_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="banditd.signal")
    t0 = time.monotonic()
    sig = RedisSignal.from_url(_dead_url(), socket_timeout=0.5, ready_timeout=0.3)
    try:
        assert not sig.subscribed
        with pytest.raises(Unavailable):
            sig.notify(3)
        assert time.monotonic() - t0 < 5.0  # never hangs
        assert sig.wait(0.0, [3]) == {3}  # in-process waiters still woke
        time.sleep(0.8)  # several reconnect attempts with backoff
        assert not sig.subscribed
    finally:
        sig.close()
    records = [r for r in caplog.records if r.name == "banditd.signal"]
    warnings = [r for r in records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and not warnings[0].exc_info  # one line, no traceback
    assert any(r.levelno == logging.DEBUG for r in records)  # later attempts only at debug


# --- lease ----------------------------------------------------------------------------------------


@pytest.fixture
def lease(prefix: str) -> Iterator[RedisLease]:
    if REDIS_DOWN:
        pytest.skip(REDIS_DOWN)
    made = RedisLease.from_url(REDIS_URL, prefix=prefix)
    yield made
    made.close()


def test_lease_first_acquire_gets_fence_1_and_excludes_others(
    lease: RedisLease, prefix: str
) -> None:
    assert lease.current_fence(1) == 0
    assert lease.acquire(1, "a", 5.0) == 1
    assert lease.acquire(1, "b", 5.0) is None  # live: b must wait
    assert lease.current_fence(1) == 1
    assert lease.acquire(1, "a", 5.0) == 1  # ours already: renewed, same fence
    assert not lease.renew(1, "b", 1, 5.0)
    lease.release(1, "b", 1)  # not b's to release
    assert lease.acquire(1, "b", 5.0) is None
    assert lease.acquire(2, "b", 5.0) == 1  # experiments are independent
    # Layout: both keys under the experiment's hash tag; the lease expires, the counter not.
    client = redis.Redis.from_url(REDIS_URL, socket_timeout=5)
    try:
        tag = "{" + f"{prefix}:exp:1" + "}:"
        assert lease.lease_key(1) == tag + "lease" and lease.fence_key(1) == tag + "lease_fence"
        assert 0 < client.pttl(lease.lease_key(1)) <= 5000
        assert client.ttl(lease.fence_key(1)) == -1
    finally:
        client.close()


def test_lease_same_holder_reacquire_renews(lease: RedisLease) -> None:
    assert lease.acquire(1, "a", 0.3) == 1
    time.sleep(0.2)
    assert lease.acquire(1, "a", 0.3) == 1  # renewed before expiry
    time.sleep(0.2)  # 0.4 s after the first acquire: alive only thanks to the renewal
    assert lease.acquire(1, "b", 5.0) is None
    assert lease.renew(1, "a", 1, 0.3)
    time.sleep(0.2)
    assert lease.acquire(1, "b", 5.0) is None
    assert lease.current_fence(1) == 1


def test_lease_takeover_after_expiry_fences_out_the_old_holder(lease: RedisLease) -> None:
    assert lease.acquire(1, "a", 0.2) == 1
    time.sleep(0.3)
    assert lease.acquire(1, "b", 5.0) == 2
    assert lease.current_fence(1) == 2
    assert not lease.renew(1, "a", 1, 5.0)  # the deposed learner learns it lost
    lease.release(1, "a", 1)  # and cannot free b's lease
    assert lease.acquire(1, "c", 5.0) is None
    assert not lease.renew(1, "b", 1, 5.0)  # the right holder with a wrong fence
    assert lease.renew(1, "b", 2, 5.0)
    lease.release(1, "b", 2)
    assert lease.acquire(1, "c", 5.0) == 3  # released: free at once, a takeover


def test_lease_same_holder_after_its_lease_lapsed_gets_a_new_fence(lease: RedisLease) -> None:
    assert lease.acquire(1, "a", 0.2) == 1
    time.sleep(0.3)
    assert lease.acquire(1, "a", 5.0) == 2  # free again: a takeover even by the same name
    assert not lease.renew(1, "a", 1, 5.0)  # the old incarnation's fence is dead
    lease.release(1, "a", 1)
    assert lease.acquire(1, "b", 5.0) is None


def test_lease_racing_threads_one_winner_per_round(lease: RedisLease) -> None:
    n_threads, rounds = 8, 6
    winners: list[tuple[str, int]] = []
    for _ in range(rounds):
        barrier = threading.Barrier(n_threads)
        results: dict[str, int | None] = {}

        def race(holder: str, barrier: threading.Barrier = barrier, out: dict = results) -> None:
            barrier.wait(5.0)
            out[holder] = lease.acquire(7, holder, 5.0)

        threads = [threading.Thread(target=race, args=(f"t{i}",)) for i in range(n_threads)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10.0)
        assert len(results) == n_threads
        won = [(h, f) for h, f in results.items() if f is not None]
        assert len(won) == 1, results
        winners.append(won[0])
        holder, fence = won[0]
        assert lease.current_fence(7) == fence
        lease.release(7, holder, fence)
    fences = [f for _, f in winners]
    assert fences == list(range(1, rounds + 1))  # strictly increasing, one per takeover


def test_lease_rejects_nonpositive_ttl(lease: RedisLease) -> None:
    with pytest.raises(ValueError):
        lease.acquire(1, "a", 0)
    with pytest.raises(ValueError):
        lease.renew(1, "a", 1, -1.0)
    assert lease.current_fence(1) == 0  # nothing was taken


def test_lease_redis_down_raises_unavailable() -> None:
    lease = RedisLease.from_url(_dead_url(), socket_timeout=0.5)
    t0 = time.monotonic()
    try:
        with pytest.raises(Unavailable):
            lease.acquire(1, "a", 5.0)
        with pytest.raises(Unavailable):
            lease.renew(1, "a", 1, 5.0)
        with pytest.raises(Unavailable):
            lease.release(1, "a", 1)
        with pytest.raises(Unavailable):
            lease.current_fence(1)
    finally:
        lease.close()
    assert time.monotonic() - t0 < 5.0


def test_lease_and_state_store_fences_live_in_different_keys(lease: RedisLease) -> None:
    """The lease's counter and the state store's highest-fence-seen share the experiment's tag;
    one must not overwrite the other."""
    from banditd.store.state_redis import RedisStateStore

    store = RedisStateStore(redis.Redis.from_url(REDIS_URL), prefix=lease.prefix)
    try:
        assert lease.acquire(7, "a", ttl_s=5.0) == 1
        assert store.put(7, 1, b"v1", fence=40)
        assert lease.current_fence(7) == 1  # not 40
        lease.release(7, "a", 1)
        assert lease.acquire(7, "b", ttl_s=5.0) == 2
        snap = store.get(7)
        assert snap is not None and snap.fence == 40  # not the lease's 2
    finally:
        store.delete(7)
