"""The in-process learner: committed feedback -> one batched policy update -> apply record.

The new state is computed first, the apply record and the rows' applied mark are committed in
one transaction, and only then is the state published. A crash in between loses nothing: the
recorded batch is replayed at restart, an unrecorded one is still pending.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable

from banditd.store import rows
from banditd.store.errors import Conflict, StaleFence, StoreError, Unavailable
from banditd.store.signal import FeedbackSignal

from . import faults
from .registry import Registry, apply_batch, compile_policy
from .replicas import Replicas
from .runtime import Runtime

log = logging.getLogger("banditd.learner")

DRAIN_S = 1.0  # longest stretch one experiment is applied before the others get a turn
RETRY_S = 0.5  # while the database is unavailable: least time between two tries


class Learner:
    def __init__(
        self,
        registry: Registry,
        signal: FeedbackSignal,
        *,
        batch: int,
        checkpoint_every: int,
        sweep_s: float = 1.0,
        linger_s: float = 0.0,
        clock: Callable[[], float] = time.time,
        replicas: Replicas | None = None,
    ) -> None:
        self.registry = registry
        self.replicas = replicas  # production mode: learn only what this replica leads
        self.signal = signal
        self.batch = batch
        self.checkpoint_every = checkpoint_every
        self.sweep_s = sweep_s
        self.linger_s = linger_s
        self.clock = clock
        # Per experiment: deadlines up to here have had their defaults. Starts at 0, so windows
        # that closed while the server was down get theirs at the first scan.
        self.default_cursor: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="learner", daemon=True)
        self.errors = 0
        # Database outage: since when (monotonic; None when up), and when to try again.
        self.down_since: float | None = None
        self._retry_at = 0.0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        with contextlib.suppress(StoreError):  # Redis down: the loop sees _stop within 50 ms
            self.signal.notify(-1)
        self._thread.join(timeout=30)

    def drain(self, rt: Runtime) -> int:
        """Write due defaults, then apply every ready batch of ``rt``; returns the batches."""
        self.defaults(rt)
        n = 0
        while self.step(rt):
            n += 1
        return n

    def defaults(self, rt: Runtime, limit: int = 4096) -> int:
        """Write the default reward of every window that closed without a reward; returns how
        many. A default is a feedback row of a winning kind, so if a reward commits first the
        default is stored as a duplicate: exactly one of them counts."""
        reward = rt.config["reward"]
        if reward["default_reward"] is None or reward["wait_window_s"] <= 0:
            return 0
        log_ = self.registry.log
        with rt.lock:  # one scan at a time, so two scans never both default the same window
            now = self.clock()
            after = self.default_cursor.get(rt.exp.id, 0.0)
            expired = log_.expired_decisions(rt.exp.id, now=now, after=after, limit=limit)
            if expired:
                log_.insert_feedback(
                    [
                        rows.Feedback(
                            experiment_id=rt.exp.id,
                            kind="default",
                            reward=float(reward["default_reward"]),
                            event_id=d.event_id,
                        )
                        for d in expired
                    ]
                )
            if len(expired) < limit:
                # Lag the cursor by a margin: a decision can be committed a little after its
                # window's end when windows are shorter than the writer's flush.
                self.default_cursor[rt.exp.id] = max(after, now - 60.0)
            return len(expired)

    def step(self, rt: Runtime) -> int:
        """Apply at most one batch; returns its rows (0 when nothing was ready)."""
        log_ = self.registry.log
        with rt.lock:
            ready_at = None
            if rt.config["reward"]["apply_mode"] == "at_window_close":
                ready_at = self.clock()
            pending = log_.pending_feedback(rt.exp.id, self.batch, ready_at=ready_at)
            if not pending:
                return 0
            v = int(rt.state.meta.version)
            new = apply_batch(rt, rt.state, pending)
            seqs = [p.feedback.seq for p in pending if p.feedback.seq is not None]
            faults.hit("after_commit_before_apply")
            log_.mark_applied(
                rt.exp.id,
                seqs,
                version_from=v,
                version_to=v + 1,
                fence=self.registry.fences[rt.exp.id],
            )
            # Thompson choice probabilities of the new state before it is published: Selects
            # go on with the old state meanwhile. Published first, every Select arriving during
            # the ~15 ms Monte Carlo waited on it (measured: Select p50 23-40 ms under a steady
            # reward stream, against 4 ms on a replica that only follows).
            rt.policy.warm(new)
            rt.state = new
            rt.watermark = max(rt.watermark, *seqs)
            if (v + 1) % self.checkpoint_every == 0:
                faults.hit("after_apply_before_checkpoint")
                self.registry.checkpoint(rt)
        return len(pending)

    def _run(self) -> None:
        last_sweep = 0.0
        # Experiments signalled or cut at DRAIN_S, waiting for their turn; and per experiment
        # the monotonic time its next pass may start (linger_s after the last one began).
        carry: set[int] = set()
        due: dict[int, float] = {}
        while not self._stop.is_set():
            try:
                last_sweep, carry = self._round(last_sweep, carry, due)
            except Exception:  # noqa: BLE001 - the learner outlives any one failure
                self.errors += 1
                log.exception("learner: pass failed")
                carry = set()
                self._stop.wait(1.0)

    def _round(
        self, last_sweep: float, carry: set[int], due: dict[int, float]
    ) -> tuple[float, set[int]]:
        """One wait and one pass over what is due; returns the new (last_sweep, carry)."""
        now = time.monotonic()
        # In production, wake in time for a publication that the <= 20 Hz limit held back.
        wait = 0.05 if self.replicas is None else self.replicas.next_publish_in(0.05)
        if carry:
            wait = min(wait, max(0.0, min(due.get(i, 0.0) for i in carry) - now))
        woken = self.signal.wait(wait) | carry
        now = time.monotonic()
        if now - last_sweep > self.sweep_s:
            targets = self.registry.all()  # a periodic sweep catches missed signals
            last_sweep = now
        else:
            targets = [rt for i in woken if (rt := self.registry.by_id(i)) is not None]
        mine = self.registry.all()
        if self.replicas is not None:
            mine = [rt for rt in mine if self._leads(rt)]
            targets = [rt for rt in targets if rt in mine]
        if self.down_since is not None:
            # The database is unavailable: nothing is carried (no spinning on due passes);
            # every RETRY_S one try over everything, which also catches the missed signals.
            carry = set()
            targets = list(mine) if now >= self._retry_at else []
            if not targets:
                self._publish(mine)
                return last_sweep, carry
        carry = {rt.exp.id for rt in targets if due.get(rt.exp.id, 0.0) > now}
        targets = [rt for rt in targets if rt.exp.id not in carry]
        for rt in mine:
            try:
                if self.defaults(rt) and rt not in targets:
                    targets.append(rt)
            except Unavailable as e:
                self._unavailable(e)
                break
            except Exception:  # noqa: BLE001 - retried at the next pass
                self.errors += 1
                log.exception("learner: default rewards of %s failed", rt.key)
        for rt in targets:
            if self.down_since is not None and time.monotonic() < self._retry_at:
                carry = set()  # the database went away in this round: try again later
                break
            due[rt.exp.id] = time.monotonic() + self.linger_s
            if self._pass(rt):
                carry.add(rt.exp.id)  # cut at DRAIN_S: picked up again after the rest
        self._publish(mine)
        return last_sweep, carry

    def _leads(self, rt: Runtime) -> bool:
        assert self.replicas is not None
        try:
            return self.replicas.leads(rt)
        except Unavailable as e:  # a takeover needs a fence from the log: not now
            self._unavailable(e)
            return False

    def _publish(self, mine: list[Runtime]) -> None:
        if self.replicas is not None:
            for rt in mine:
                self.replicas.publish_due(rt)

    def _unavailable(self, e: Unavailable) -> None:
        """The database is unavailable: one warning per outage, then tries every RETRY_S."""
        now = time.monotonic()
        if self.down_since is None:
            self.down_since = now
            log.warning(
                "learner: database unavailable (%s): applying nothing until it returns "
                "(trying every %.1f s)",
                e,
                RETRY_S,
            )
        self._retry_at = now + RETRY_S

    def _available(self) -> None:
        if self.down_since is not None:
            log.warning(
                "learner: database available again after %.1f s",
                time.monotonic() - self.down_since,
            )
            self.down_since = None

    def _pass(self, rt: Runtime) -> bool:
        """Apply the ready feedback of ``rt``; True if the pass was cut at DRAIN_S."""
        try:
            # A pass ends after DRAIN_S so other experiments get their turn, and in production
            # the lease is renewed between batches (a steady reward stream would otherwise
            # outlast it and hand learning to another replica).
            until = time.monotonic() + DRAIN_S
            while not self._stop.is_set():
                n = self.step(rt)
                self._available()
                if n and self.replicas is not None:
                    self.replicas.applied(rt)
                    if not self.replicas.leads(rt):
                        return False
                # A batch short of full took everything committed when it read; feedback
                # committed since then has signalled, so no query for an empty batch.
                if n < self.batch:
                    return False
                if time.monotonic() > until:
                    return True
        except Unavailable as e:  # the feedback stays pending: applied when it returns
            self._unavailable(e)
        except (StaleFence, Conflict) as e:
            if self.replicas is not None:
                self.replicas.lost(rt, e)
            else:
                self._refused(rt, e)
        except Exception:  # noqa: BLE001 - keep learning other experiments; retried
            self.errors += 1
            log.exception("learner: applying feedback of %s failed", rt.key)
            time.sleep(0.1)
        return False

    def _refused(self, rt: Runtime, e: Conflict) -> None:
        """Embedded: an apply refused. If the log holds a newer apply than our state, an apply
        of ours committed as the connection to the database broke (we saw an error, the commit
        happened): take the state from the log. Otherwise only another process writing the same
        log could cause this."""
        try:
            rec = self.registry.log.latest_apply(rt.exp.id)
            if rec is not None and rec.version_to > int(rt.state.meta.version):
                log.warning(
                    "learner: %s: the log is at version %d, this state at %d (an apply "
                    "committed as the database connection broke): reloading from the log",
                    rt.key,
                    rec.version_to,
                    int(rt.state.meta.version),
                )
                self.registry.rebuild(rt)
                compile_policy(rt.config, rt.policy, len(rt.arms))
                return
        except Unavailable as u:
            self._unavailable(u)
            return
        self.errors += 1
        log.error("learner: applying feedback of %s refused: %s", rt.key, e)
