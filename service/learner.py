"""The in-process learner: committed feedback -> one batched policy update -> apply record.

The new state is computed first, the apply record and the rows' applied mark are committed in
one transaction, and only then is the state published. A crash in between loses nothing: the
recorded batch is replayed at restart, an unrecorded one is still pending.
"""

from __future__ import annotations

import logging
import threading
import time

from banditd.store.signal import FeedbackSignal

from .registry import Registry, apply_batch
from .runtime import Runtime

log = logging.getLogger("banditd.learner")


class Learner:
    def __init__(
        self,
        registry: Registry,
        signal: FeedbackSignal,
        *,
        batch: int,
        checkpoint_every: int,
        sweep_s: float = 1.0,
    ) -> None:
        self.registry = registry
        self.signal = signal
        self.batch = batch
        self.checkpoint_every = checkpoint_every
        self.sweep_s = sweep_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="learner", daemon=True)
        self.errors = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.signal.notify(-1)
        self._thread.join(timeout=30)

    def drain(self, rt: Runtime) -> int:
        """Apply every pending batch of ``rt`` now; returns how many batches were applied."""
        n = 0
        while self.step(rt):
            n += 1
        return n

    def step(self, rt: Runtime) -> bool:
        """Apply at most one batch; False when nothing was pending."""
        log_ = self.registry.log
        with rt.lock:
            pending = log_.pending_feedback(rt.exp.id, self.batch)
            if not pending:
                return False
            v = int(rt.state.meta.version)
            new = apply_batch(rt, rt.state, pending)
            seqs = [p.feedback.seq for p in pending if p.feedback.seq is not None]
            log_.mark_applied(
                rt.exp.id,
                seqs,
                version_from=v,
                version_to=v + 1,
                fence=self.registry.fences[rt.exp.id],
            )
            rt.state = new
            rt.watermark = max(rt.watermark, *seqs)
            if (v + 1) % self.checkpoint_every == 0:
                self.registry.checkpoint(rt)
        return True

    def _run(self) -> None:
        last_sweep = 0.0
        while not self._stop.is_set():
            woken = self.signal.wait(0.05)
            now = time.monotonic()
            if now - last_sweep > self.sweep_s:
                targets = self.registry.all()  # a periodic sweep catches missed signals
                last_sweep = now
            else:
                targets = [rt for i in woken if (rt := self.registry.by_id(i)) is not None]
            for rt in targets:
                try:
                    while not self._stop.is_set() and self.step(rt):
                        pass
                except Exception:  # noqa: BLE001 - keep learning other experiments; retried
                    self.errors += 1
                    log.exception("learner: applying feedback of %s failed", rt.key)
                    time.sleep(0.1)
