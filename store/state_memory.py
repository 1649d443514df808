"""In-process ``StateStore`` for the embedded default: a dict under a lock."""

from __future__ import annotations

import threading
from typing import TypeVar

from .errors import StaleFence
from .state import Snapshot, StateStore

T = TypeVar("T")


class MemoryStateStore(StateStore[T]):
    """Values are kept by reference, not copied: publish states nobody mutates afterwards (the
    learner updates a private state and publishes a copy)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._snapshots: dict[int, Snapshot[T]] = {}
        self._fences: dict[int, int] = {}

    def get(self, experiment_id: int) -> Snapshot[T] | None:
        return self._snapshots.get(experiment_id)  # one dict read: atomic under the GIL

    def version(self, experiment_id: int) -> int | None:
        snap = self._snapshots.get(experiment_id)
        return None if snap is None else snap.version

    def put(self, experiment_id: int, version: int, value: T, *, fence: int | None = None) -> bool:
        with self._lock:
            if fence is not None:
                seen = self._fences.get(experiment_id)
                if seen is not None and fence < seen:
                    raise StaleFence(f"fence: {fence} is older than {seen}")
                self._fences[experiment_id] = fence
            current = self._snapshots.get(experiment_id)
            if current is not None and version <= current.version:
                return False
            self._snapshots[experiment_id] = Snapshot(version, value, fence)
            return True

    def delete(self, experiment_id: int) -> None:
        with self._lock:
            self._snapshots.pop(experiment_id, None)
            self._fences.pop(experiment_id, None)
