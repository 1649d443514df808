"""A settable clock for in-process servers (``start(config, clock=FakeClock())``): windows and
deadlines move when a test says so, with no real sleeps."""

from __future__ import annotations

import threading


class FakeClock:
    def __init__(self, t: float = 1_800_000_000.0) -> None:
        self.t = t
        self.lock = threading.Lock()

    def __call__(self) -> float:
        with self.lock:
            return self.t

    def advance(self, dt: float) -> None:
        with self.lock:
            self.t += dt
