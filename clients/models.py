"""Plain values the client takes and returns (frozen dataclasses; no protobufs)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy.typing as npt

__all__ = [
    "Ack",
    "ApplyMode",
    "ArmInfo",
    "ArmSpec",
    "ArmStats",
    "Decision",
    "ExperimentInfo",
    "ExperimentStatus",
    "ExperimentUpdate",
    "FeedbackCounts",
    "FeedbackKind",
    "HoldoutLift",
    "Observation",
    "Reward",
    "RewardKind",
    "Stats",
]

RewardKind = Literal["binary", "bounded", "real"]
ApplyMode = Literal["immediate", "at_window_close"]
ExperimentStatus = Literal["active", "paused"]
FeedbackKind = Literal["reward", "default", "duplicate", "late", "orphan", "observation"]

# A dense vector as the user holds it: a numpy array or any sequence of numbers.
Vector = npt.ArrayLike
# A sparse vector: {index: value}; string keys are accepted because JSON objects have them.
SparseDict = Mapping[int, float] | Mapping[str, float]


# ---------------------------------------------------------------------------------------------
# Inputs


@dataclass(frozen=True)
class ArmSpec:
    """An arm to create: id, optional metadata (e.g. ``{"cost": 0.002}``), static features."""

    id: str
    metadata: Mapping[str, Any] | None = None
    features: Vector | None = None


@dataclass(frozen=True)
class Reward:
    """A reward for a decided event id.

    Ranked families (cascades, slates) learn from ``slot_values``: one value per arm of the
    decision, in the order given (cascades and PBM: clicks 0 or 1; a cascade's slots after the
    first click count as not examined); ``value`` is then the slate's reward, logged as sent.
    Single-arm families take ``value`` only.
    ``reward_id`` makes a retried report idempotent; the client fills in a UUIDv7 when empty.
    """

    event_id: str
    value: float
    slot_values: Sequence[float] = ()
    metrics: Mapping[str, float] | None = None
    reward_id: str = ""


@dataclass(frozen=True)
class Observation:
    """A direct observation (warm start, back-fill): the arm(s) shown and the reward(s) seen
    (ranked families: the list in order and one reward per arm).

    ``context`` is dense (a vector) or sparse (``{index: value}``) or None for non-contextual
    families; ``arm_features`` maps arm id to its feature vector for this observation.
    """

    arm_ids: str | Sequence[str]
    rewards: float | Sequence[float]
    context: Vector | SparseDict | None = None
    arm_features: Mapping[str, Vector] | None = None
    propensity: float | None = None


# ---------------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True)
class ArmInfo:
    id: str
    active: bool = True
    metadata: dict[str, Any] = field(default_factory=dict)
    features: tuple[float, ...] = ()


@dataclass(frozen=True)
class ExperimentInfo:
    namespace: str
    name: str
    family: str
    hyperparameters: dict[str, Any]
    revision: int
    arms: tuple[ArmInfo, ...]
    dim: int
    sparse: bool
    arm_feature_dim: int
    schema_name: str
    schema_version: int
    reward_kind: RewardKind | str
    # Seconds; None = no limit.
    wait_window: float | None
    default_reward: float | None
    apply_mode: ApplyMode | str
    train_on_holdout: bool
    epsilon: float
    slate_size: int
    holdout_fraction: float
    status: ExperimentStatus | str
    version: int
    create_time: dt.datetime | None = None
    update_time: dt.datetime | None = None

    @property
    def arm_ids(self) -> tuple[str, ...]:
        return tuple(a.id for a in self.arms)

    @property
    def active_arm_ids(self) -> tuple[str, ...]:
        return tuple(a.id for a in self.arms if a.active)


@dataclass(frozen=True)
class ExperimentUpdate:
    experiment: ExperimentInfo
    # True when the change created a new revision (fresh statistics).
    new_revision: bool


@dataclass(frozen=True)
class Decision:
    event_id: str
    arm_ids: tuple[str, ...]
    propensity: float
    slot_propensities: tuple[float, ...] = ()
    revision: int = 0
    version: int = 0
    holdout: bool = False
    applied_watermark: int = 0
    deferred: bool = False
    # True when the server had already decided this event id and returned the recorded decision.
    replayed: bool = False
    decide_time: dt.datetime | None = None

    @property
    def arm_id(self) -> str:
        """The chosen arm (the first slot of a slate)."""
        return self.arm_ids[0] if self.arm_ids else ""


@dataclass(frozen=True)
class Ack:
    event_id: str
    sequence: int
    kind: FeedbackKind | str
    duplicate: bool = False
    late: bool = False
    orphan: bool = False

    @property
    def applied(self) -> bool:
        """Whether this row will train the policy (a first reward or an observation)."""
        return self.kind in ("reward", "observation")


@dataclass(frozen=True)
class FeedbackCounts:
    rewards: int = 0
    defaults: int = 0
    duplicates: int = 0
    late: int = 0
    orphans: int = 0
    observations: int = 0


@dataclass(frozen=True)
class ArmStats:
    arm_id: str
    active: bool
    decisions: int
    rewards: int
    mean_reward: float
    ci_low: float
    ci_high: float
    holdout_decisions: int = 0
    # The model's mean and 95% interval (Stats.model_method says how) and the probability this
    # arm is best (Stats.prob_best_method); None where the service leaves them undefined
    # (contextual families, arms without enough rewards, retired arms for prob_best).
    model_mean: float | None = None
    model_low: float | None = None
    model_high: float | None = None
    prob_best: float | None = None


@dataclass(frozen=True)
class HoldoutLift:
    """Mean reward of the policy's decisions minus the holdout's, with a 95% Welch interval."""

    policy_rewards: int
    policy_mean: float
    holdout_rewards: int
    holdout_mean: float
    lift: float
    ci_low: float
    ci_high: float


@dataclass(frozen=True)
class Stats:
    decisions: int
    feedback: FeedbackCounts
    arms: tuple[ArmStats, ...]
    revision: int
    version: int
    applied_watermark: int
    holdout_decisions: int
    model_method: str = ""
    prob_best_method: str = ""
    prob_best_draws: int = 0
    # Plug-in regret of the policy's decisions (see GetStatsResponse.regret); None if undefined.
    regret: float | None = None
    # None until both the policy and the holdout have 2 rewards.
    lift: HoldoutLift | None = None

    def arm(self, arm_id: str) -> ArmStats:
        for a in self.arms:
            if a.arm_id == arm_id:
                return a
        raise KeyError(arm_id)
