"""FeedbackSignal: wakes the learner when feedback was committed.

Only a hint. The log is the source of truth, so a learner still polls ``pending_feedback`` after
a timeout: a lost or coalesced signal delays learning by at most that timeout and never loses
feedback. Backends: ``signal_local.LocalSignal`` (threads in one process) and, later, Redis
Streams or pub/sub across replicas.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Protocol


class FeedbackSignal(Protocol):
    def notify(self, experiment_id: int) -> None:
        """Record that ``experiment_id`` has new committed feedback; call after the commit."""
        ...

    def wait(self, timeout: float, experiment_ids: Collection[int] | None = None) -> set[int]:
        """Block until one of ``experiment_ids`` (any experiment if None) was notified, at most
        ``timeout`` seconds. Returns — and clears — the notified ones among them; notifications
        for other experiments stay for their waiters. Empty on timeout or after ``close``."""
        ...

    def close(self) -> None:
        """Wake every waiter; later waits return at once."""
        ...
