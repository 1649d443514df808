"""In-process ``FeedbackSignal`` on a ``threading.Condition``."""

from __future__ import annotations

import threading
import time
from collections.abc import Collection

from .signal import FeedbackSignal


class LocalSignal(FeedbackSignal):
    """Notifications coalesce per experiment: ten notifies before a wait wake it once."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._pending: set[int] = set()
        self._closed = False

    def notify(self, experiment_id: int) -> None:
        with self._cond:
            self._pending.add(experiment_id)
            self._cond.notify_all()  # waiters filter by experiment, so wake them all

    def wait(self, timeout: float, experiment_ids: Collection[int] | None = None) -> set[int]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                if self._closed:
                    return set()
                got = (
                    set(self._pending)
                    if experiment_ids is None
                    else self._pending.intersection(experiment_ids)
                )
                if got:
                    self._pending -= got
                    return got
                left = deadline - time.monotonic()
                if left <= 0:
                    return set()
                self._cond.wait(left)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
