"""StateStore: the hot copy of each experiment's policy state, tagged with its version.

A cache, never the truth: losing it loses nothing, because the event log's checkpoints and apply
records rebuild every state. The learner publishes, Select readers poll ``version`` (cheap) and
``get`` a new snapshot only when it moved.

Backends: ``state_memory.MemoryStateStore`` (embedded; values are the live objects) and, later,
Redis (values are bytes, or per-arm parts with their own versions, under one hash tag per
experiment). The value type is the backend's parameter, so both fit this one interface.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Snapshot(Generic[T]):
    version: int
    value: T
    fence: int | None = None  # the learner's token when published, if it gave one


class StateStore(Protocol[T]):
    def get(self, experiment_id: int) -> Snapshot[T] | None:
        """The latest published snapshot, or None if none was published (or it was lost)."""
        ...

    def version(self, experiment_id: int) -> int | None:
        """The latest published version without fetching the state."""
        ...

    def put(self, experiment_id: int, version: int, value: T, *, fence: int | None = None) -> bool:
        """Publish ``value`` as ``version``. Never goes backwards: returns False, storing nothing,
        when ``version`` is not above the stored one (a slower publisher lost a race). Raises
        ``StaleFence`` when ``fence`` is below a fence already seen for this experiment."""
        ...

    def delete(self, experiment_id: int) -> None:
        """Forget the experiment's state (and its fence), e.g. on a new revision."""
        ...
