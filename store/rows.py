"""Rows the event log reads and writes: small frozen dataclasses, no SQLAlchemy, no policy types.

Vectors whose size grows with the context dimension or the arm count (contexts, sparse indices,
eligible sets, arm features) travel as packed bytes (see ``packing``) so the store never copies
or converts them; per-slot values of a decision (at most the slate size) are plain tuples.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from .packing import unpack_f64, unpack_i32

ExperimentStatus = Literal["active", "paused"]
EXPERIMENT_STATUSES: tuple[ExperimentStatus, ...] = ("active", "paused")

FeedbackKind = Literal["reward", "default", "duplicate", "late", "orphan", "observation"]
FEEDBACK_KINDS: tuple[FeedbackKind, ...] = (
    "reward",
    "default",
    "duplicate",
    "late",
    "orphan",
    "observation",
)
# At most one row of these kinds per (experiment, event id): the reward that counts.
WINNING_KINDS: tuple[FeedbackKind, ...] = ("reward", "default")
# Kinds the learner applies; duplicate, late and orphan rows are logged and counted only.
APPLIED_KINDS: tuple[FeedbackKind, ...] = ("reward", "default", "observation")


@dataclass(frozen=True, slots=True)
class RevisionSpec:
    """Identity hyperparameters of a policy; any change makes a new revision number."""

    revision: int
    family: str
    hyperparameters: Mapping[str, Any]
    dim: int | None = None
    feature_schema: str = ""
    feature_schema_version: int = 0


@dataclass(frozen=True, slots=True)
class Revision:
    experiment_id: int
    revision: int
    family: str
    hyperparameters: Mapping[str, Any]
    dim: int | None
    feature_schema: str
    feature_schema_version: int
    created_at: float


@dataclass(frozen=True, slots=True)
class ArmSpec:
    """An arm to add: the store assigns its slot."""

    arm_id: str
    metadata: Mapping[str, Any] = field(default_factory=dict)
    features: bytes | None = None  # packed float64 static feature vector


@dataclass(frozen=True, slots=True)
class Arm:
    experiment_id: int
    slot: int  # index into the policy state; never reused, even after retirement
    arm_id: str
    metadata: Mapping[str, Any]
    features: bytes | None
    active: bool
    created_at: float
    retired_at: float | None = None

    def features_array(self) -> np.ndarray | None:
        return None if self.features is None else unpack_f64(self.features)


@dataclass(frozen=True, slots=True)
class Experiment:
    id: int
    namespace: str
    name: str
    family: str
    status: ExperimentStatus
    revision: int
    config: Mapping[str, Any]
    created_at: float
    updated_at: float


@dataclass(frozen=True, slots=True)
class Decision:
    """One answer to Select, as logged. ``created_at`` is the server's time (epoch seconds): the
    wait window runs from it."""

    experiment_id: int
    event_id: str
    revision: int
    version: int  # state version the decision was made with
    chosen: tuple[int, ...]  # arm slots in slate order (one for single-arm families)
    slot_propensities: tuple[float, ...]  # P(a_k | a_<k) per chosen slot
    created_at: float
    context: bytes | None = None  # packed float64; dense, or the values of a sparse context
    sparse_indices: bytes | None = None  # packed int32, aligned with the context values
    arm_feature_slots: bytes | None = None  # packed int32: the arms of the rows below
    arm_features: bytes | None = None  # packed float64 [len(arm_feature_slots), d_arm]
    eligible: bytes | None = None  # packed int32 slots; None = every active arm
    unit_id: str | None = None
    holdout: bool = False
    deferred: bool = False
    deadline: float | None = None  # end of the wait window; None = no window (or deferred)

    @property
    def propensity(self) -> float:
        """Probability of the whole decision: the product of the slot propensities."""
        return math.prod(self.slot_propensities)

    def context_array(self) -> np.ndarray | None:
        return None if self.context is None else unpack_f64(self.context)

    def eligible_slots(self) -> np.ndarray | None:
        return None if self.eligible is None else unpack_i32(self.eligible)


@dataclass(frozen=True, slots=True)
class Feedback:
    """A reward for an event id, or a direct observation (``event_id`` None, with its own context,
    arms and optional logged propensity). ``seq`` and ``applied_version`` are set on rows read
    back; ``committed_at`` None on insert means "stamp with the store's clock"."""

    experiment_id: int
    kind: FeedbackKind
    reward: float  # the decision's reward (for slates: the slate reward)
    event_id: str | None = None
    slot_rewards: tuple[float, ...] = ()  # per-slot rewards (slates, cascades)
    metrics: Mapping[str, float] | None = None  # logged, not learned from
    reward_id: str | None = None
    client_seq: int | None = None
    # Direct observations only:
    chosen: tuple[int, ...] = ()
    propensity: float | None = None
    context: bytes | None = None
    sparse_indices: bytes | None = None
    arm_feature_slots: bytes | None = None
    arm_features: bytes | None = None
    event_time: float | None = None
    # Not stored: the decision's window end. A ``reward`` committed after it is stored ``late``
    # (judged by the commit time, at the commit).
    deadline: float | None = None
    # Set by the store:
    committed_at: float | None = None
    seq: int | None = None
    applied_version: int | None = None

    def context_array(self) -> np.ndarray | None:
        return None if self.context is None else unpack_f64(self.context)


@dataclass(frozen=True, slots=True)
class Committed:
    """Acknowledgement of one inserted feedback row: its sequence number and the kind stored
    (``duplicate`` when a reward or default for the event id had already won)."""

    seq: int
    kind: FeedbackKind


@dataclass(frozen=True, slots=True)
class Pending:
    """A feedback row with the decision it rewards (None for observations and lost decisions)."""

    feedback: Feedback
    decision: Decision | None


@dataclass(frozen=True, slots=True)
class ApplyRecord:
    experiment_id: int
    version_from: int
    version_to: int
    fence: int
    n_rows: int
    created_at: float


@dataclass(frozen=True, slots=True)
class AppliedBatch:
    record: ApplyRecord
    rows: tuple[Pending, ...]  # in seq order


@dataclass(frozen=True, slots=True)
class Checkpoint:
    experiment_id: int
    revision: int
    version: int
    fence: int
    blob: bytes
    created_at: float


@dataclass(frozen=True, slots=True)
class Counts:
    decisions: int
    feedback: Mapping[FeedbackKind, int]  # every kind present, zero when none
    applied: int  # feedback rows applied to the policy
    version: int  # latest applied version (0 before the first apply)
