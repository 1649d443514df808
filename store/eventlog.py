"""EventLog: the durable log (DESIGN §5) — experiments, decisions, feedback, apply records,
checkpoints. The one implementation is ``sql.SqlEventLog`` (SQLite and PostgreSQL).

Every method is one transaction: it commits before returning (acknowledged = committed) or
raises and leaves nothing behind. Errors the caller can act on are the ``errors`` classes;
``Unavailable`` means the database could not be reached and the call may be retried.

Ordering note: ``seq`` is unique and increases in insertion order, but (1) within one
``insert_feedback`` batch rows are inserted in (experiment, event id) order, not the caller's,
and (2) with concurrent writers on PostgreSQL a smaller ``seq`` can become visible after a larger
one. Nothing here relies on "every seq below the highest seen is visible"; progress is tracked
per row (``applied_version``) and per batch (apply records), never by a seq watermark.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Protocol

from .rows import (
    AppliedBatch,
    ApplyRecord,
    Arm,
    ArmSpec,
    Checkpoint,
    Committed,
    Counts,
    Decision,
    Experiment,
    ExperimentStatus,
    Feedback,
    Pending,
    Revision,
    RevisionSpec,
)


class EventLog(Protocol):
    # --- experiments, revisions, arms ------------------------------------------------------

    def create_experiment(
        self,
        namespace: str,
        name: str,
        *,
        config: Mapping[str, Any],
        revision: RevisionSpec,
        arms: Sequence[ArmSpec] = (),
        status: ExperimentStatus = "active",
    ) -> Experiment:
        """Create the experiment (and its namespace if new) with its first revision and arms in
        slots 0..len(arms)-1. Raises ``AlreadyExists`` if (namespace, name) is taken or two arms
        share an id."""
        ...

    def get_experiment(self, namespace: str, name: str) -> Experiment | None: ...

    def get_experiment_by_id(self, experiment_id: int) -> Experiment | None: ...

    def list_experiments(self, namespace: str | None = None) -> list[Experiment]:
        """All experiments (of ``namespace`` if given), ordered by namespace then name."""
        ...

    def update_experiment(
        self,
        experiment_id: int,
        *,
        status: ExperimentStatus | None = None,
        config: Mapping[str, Any] | None = None,
        revision: int | None = None,
    ) -> Experiment:
        """Change what is given; ``revision`` must exist (the family follows it). ``NotFound``."""
        ...

    def add_revision(
        self, experiment_id: int, revision: RevisionSpec, *, make_current: bool = True
    ) -> Revision:
        """Record a new revision, numbered above every existing one (``AlreadyExists`` if the
        number is taken, ``Conflict`` if lower); with ``make_current`` the experiment switches
        to it in the same transaction."""
        ...

    def get_revision(self, experiment_id: int, revision: int) -> Revision | None: ...

    def list_revisions(self, experiment_id: int) -> list[Revision]: ...

    def add_arms(self, experiment_id: int, arms: Sequence[ArmSpec]) -> list[Arm]:
        """Append arms in the next free slots (slots are never reused). ``AlreadyExists`` names
        ids already present, retired ones included."""
        ...

    def retire_arms(self, experiment_id: int, arm_ids: Sequence[str]) -> list[Arm]:
        """Mark arms inactive (idempotent); returns them. ``NotFound`` names unknown ids."""
        ...

    def list_arms(self, experiment_id: int, *, active_only: bool = False) -> list[Arm]:
        """Arms in slot order."""
        ...

    # --- decisions ---------------------------------------------------------------------------

    def insert_decisions(self, rows: Sequence[Decision]) -> set[tuple[int, str]]:
        """Insert a batch (any experiments) in one transaction. Rows whose (experiment, event id)
        is already logged — or repeated within the batch — are skipped, never overwritten: the
        first recorded decision is the decision. Returns the skipped keys."""
        ...

    def get_decisions(self, experiment_id: int, event_ids: Iterable[str]) -> dict[str, Decision]:
        """The logged decisions among ``event_ids`` (missing ids are absent from the dict)."""
        ...

    # --- feedback ----------------------------------------------------------------------------

    def insert_feedback(self, rows: Sequence[Feedback]) -> list[Committed]:
        """Commit a batch (group commit) and return, per row in order, its seq and stored kind.

        First reward wins: a ``reward`` or ``default`` row whose (experiment, event id) already
        has one — committed earlier, or earlier in this batch — is stored as ``duplicate``.
        Exactly one wins under any number of concurrent writers. Other kinds (``late``,
        ``orphan``, ``observation``) are stored as given; judging them is the caller's job.
        ``committed_at`` None is stamped with the store's clock. Deadlocks and lost races are
        retried inside; ``Unavailable`` only if they persist or the database is down.
        """
        ...

    def pending_feedback(
        self, experiment_id: int, limit: int, *, ready_at: float | None = None
    ) -> list[Pending]:
        """Up to ``limit`` committed, unapplied rows of the applied kinds (reward, default,
        observation) in seq order, each with its decision (None if none is logged). With
        ``ready_at`` (apply mode at_window_close) only rows whose decision is activated and whose
        window closed by then, and observations."""
        ...

    def find_by_reward_id(
        self, experiment_id: int, reward_ids: Sequence[str]
    ) -> dict[str, Committed]:
        """The first stored row of each reward id: its ack, for retried Updates."""
        ...

    def expired_decisions(
        self, experiment_id: int, *, now: float, after: float, limit: int
    ) -> list[Decision]:
        """Activated decisions whose window ended in (after, now] with no reward or default
        yet, by deadline: the ones owed a default reward."""
        ...

    def activate(
        self, experiment_id: int, event_ids: Sequence[str], *, now: float, window: float
    ) -> list[str]:
        """Start the windows of deferred decisions (deadline = now + window; none if window is
        0). Returns the ids that were deferred and now are not."""
        ...

    def last_decision_time(self) -> float | None:
        """The newest decision's server time over all experiments (crash windows)."""
        ...

    # --- learner -----------------------------------------------------------------------------

    def acquire_fence(self, experiment_id: int) -> int:
        """Increment and return the experiment's fencing token. A learner calls this when it
        takes over; from then on writes carrying an older token raise ``StaleFence``."""
        ...

    def current_fence(self, experiment_id: int) -> int:
        """The current fencing token (0 before the first ``acquire_fence``)."""
        ...

    def mark_applied(
        self,
        experiment_id: int,
        seqs: Sequence[int],
        *,
        version_from: int,
        version_to: int,
        fence: int,
    ) -> ApplyRecord:
        """Atomically set ``applied_version = version_to`` on the pending rows ``seqs`` and write
        the apply record (version_from → version_to, fence).

        Refused, with nothing written: ``StaleFence`` if ``fence`` is not current; ``Conflict``
        if ``version_to`` (or ``version_from``) was already applied, if ``version_from`` does not
        continue the latest record, or if any seq is not a pending row of this experiment."""
        ...

    def latest_apply(self, experiment_id: int) -> ApplyRecord | None: ...

    def applied_batches_after(self, experiment_id: int, version: int) -> Iterator[AppliedBatch]:
        """The applied batches with ``version_to > version`` in version order, each with its
        rows in seq order: replayed onto a checkpoint at ``version`` they rebuild the state."""
        ...

    def save_checkpoint(
        self, experiment_id: int, *, revision: int, version: int, blob: bytes, fence: int
    ) -> Checkpoint:
        """Store the serialized state at (revision, version), replacing one at the same key.
        ``StaleFence`` if ``fence`` is not current."""
        ...

    def latest_checkpoint(
        self, experiment_id: int, revision: int | None = None
    ) -> Checkpoint | None:
        """The checkpoint with the highest version (of ``revision`` if given)."""
        ...

    def prune_checkpoints(self, experiment_id: int, keep: int) -> int:
        """Delete all but the ``keep`` newest checkpoints; returns how many were deleted."""
        ...

    # --- reporting ---------------------------------------------------------------------------

    def counts(self, experiment_id: int) -> Counts:
        """Decisions, feedback rows per kind, applied rows and the applied version, read as
        one consistent snapshot."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...
