"""Background compilation of the batch buckets an experiment will meet.

``compile_policy`` compiles one select and one update before an experiment is visible. Later
requests and learner batches of other sizes land in other power-of-two buckets, each a first-time
XLA compile (a second or more for a linear model at d=64): on a fresh server the learner would
spend its first seconds compiling while feedback piles up. This thread compiles those buckets
ahead of time, one experiment shape at a time; compiled programs are shared by every experiment
of the same family and shape, so a second experiment costs nothing.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
from banditd import policies

from .registry import fresh_state

log = logging.getLogger("banditd.precompile")


def buckets(limit: int) -> list[int]:
    out, b = [], 2
    while b <= limit:
        out.append(b)
        b *= 2
    return out


def compile_buckets(
    config: dict[str, Any], policy: policies.Policy, n_arms: int, select_rows: int, update_rows: int
) -> int:
    """Run select and update once per bucket (2..limit) on a throwaway state; returns calls."""
    fam = policies.get(config["family"])
    st = fresh_state(config, policy, max(n_arms, 1), 1, 0)
    cap = int(np.shape(st.meta.active)[0])
    d = config["policy_dim"] if fam.contextual else 0
    per_item = fam.contextual and bool(config["arm_feature_dim"])
    k = max(1, int(config["slate_size"])) if fam.ranked else 0
    calls = 0
    for b in buckets(select_rows):
        x = np.zeros((b, cap, d)) if per_item else (np.zeros((b, d)) if d else None)
        keys = np.zeros((b, 2), np.uint32)
        if fam.ranked:
            policy.select(st, x, keys, k=k)
        else:
            policy.select(st, x, keys)
        calls += 1
    for b in buckets(update_rows):
        if fam.ranked:
            x = np.zeros((b, cap, d)) if fam.contextual else None
            arms = np.tile(np.arange(k), (b, 1))
            policy.update(st, x, arms, np.zeros((b, k)))
        else:
            x = np.zeros((b, d)) if d else None
            policy.update(st, x, np.zeros(b, np.int64), np.zeros(b), propensity=np.ones(b))
        calls += 1
    return calls


class Precompiler:
    """One daemon thread working through submitted experiment shapes."""

    def __init__(self, select_rows: int, update_rows: int) -> None:
        self.select_rows, self.update_rows = select_rows, update_rows
        self._jobs: queue.Queue[tuple[dict, policies.Policy, int] | None] = queue.Queue()
        self._seen: set[tuple] = set()
        self.on_idle: Callable[[], None] | None = None  # after the last queued job
        self._thread = threading.Thread(target=self._run, name="precompile", daemon=True)
        self._thread.start()

    def submit(self, config: dict[str, Any], policy: policies.Policy, n_arms: int) -> None:
        shape = (
            config["family"],
            repr(sorted(config["hyperparameters"].items())),
            config["policy_dim"],
            config["arm_feature_dim"],
            config["slate_size"],
            policies.capacity_for(max(n_arms, 1)),
        )
        if shape not in self._seen:
            self._seen.add(shape)
            self._jobs.put((config, policy, n_arms))

    def idle(self) -> bool:
        return self._jobs.unfinished_tasks == 0

    def join(self) -> None:
        self._jobs.join()

    def stop(self) -> None:
        self._jobs.put(None)

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            try:
                if job is None:
                    return
                config, policy, n_arms = job
                compile_buckets(config, policy, n_arms, self.select_rows, self.update_rows)
            except Exception:  # a failed warm-up only costs the first request its compile
                log.warning("precompile of %s failed", job[0]["family"] if job else "?")
            finally:
                self._jobs.task_done()
            if self.on_idle is not None and self._jobs.unfinished_tasks == 0:
                self.on_idle()
