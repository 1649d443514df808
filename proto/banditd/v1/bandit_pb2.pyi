import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RewardKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REWARD_KIND_UNSPECIFIED: _ClassVar[RewardKind]
    REWARD_KIND_BINARY: _ClassVar[RewardKind]
    REWARD_KIND_BOUNDED: _ClassVar[RewardKind]
    REWARD_KIND_REAL: _ClassVar[RewardKind]

class ApplyMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    APPLY_MODE_UNSPECIFIED: _ClassVar[ApplyMode]
    APPLY_MODE_IMMEDIATE: _ClassVar[ApplyMode]
    APPLY_MODE_AT_WINDOW_CLOSE: _ClassVar[ApplyMode]

class ExperimentStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EXPERIMENT_STATUS_UNSPECIFIED: _ClassVar[ExperimentStatus]
    EXPERIMENT_STATUS_ACTIVE: _ClassVar[ExperimentStatus]
    EXPERIMENT_STATUS_PAUSED: _ClassVar[ExperimentStatus]

class FeedbackKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FEEDBACK_KIND_UNSPECIFIED: _ClassVar[FeedbackKind]
    FEEDBACK_KIND_REWARD: _ClassVar[FeedbackKind]
    FEEDBACK_KIND_DEFAULT: _ClassVar[FeedbackKind]
    FEEDBACK_KIND_DUPLICATE: _ClassVar[FeedbackKind]
    FEEDBACK_KIND_LATE: _ClassVar[FeedbackKind]
    FEEDBACK_KIND_ORPHAN: _ClassVar[FeedbackKind]
    FEEDBACK_KIND_OBSERVATION: _ClassVar[FeedbackKind]
REWARD_KIND_UNSPECIFIED: RewardKind
REWARD_KIND_BINARY: RewardKind
REWARD_KIND_BOUNDED: RewardKind
REWARD_KIND_REAL: RewardKind
APPLY_MODE_UNSPECIFIED: ApplyMode
APPLY_MODE_IMMEDIATE: ApplyMode
APPLY_MODE_AT_WINDOW_CLOSE: ApplyMode
EXPERIMENT_STATUS_UNSPECIFIED: ExperimentStatus
EXPERIMENT_STATUS_ACTIVE: ExperimentStatus
EXPERIMENT_STATUS_PAUSED: ExperimentStatus
FEEDBACK_KIND_UNSPECIFIED: FeedbackKind
FEEDBACK_KIND_REWARD: FeedbackKind
FEEDBACK_KIND_DEFAULT: FeedbackKind
FEEDBACK_KIND_DUPLICATE: FeedbackKind
FEEDBACK_KIND_LATE: FeedbackKind
FEEDBACK_KIND_ORPHAN: FeedbackKind
FEEDBACK_KIND_OBSERVATION: FeedbackKind

class FeatureSchema(_message.Message):
    __slots__ = ("name", "version", "dimension", "sparse", "arm_feature_dimension")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DIMENSION_FIELD_NUMBER: _ClassVar[int]
    SPARSE_FIELD_NUMBER: _ClassVar[int]
    ARM_FEATURE_DIMENSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    dimension: int
    sparse: bool
    arm_feature_dimension: int
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ..., dimension: _Optional[int] = ..., sparse: _Optional[bool] = ..., arm_feature_dimension: _Optional[int] = ...) -> None: ...

class RewardSpec(_message.Message):
    __slots__ = ("kind", "wait_window", "default_reward", "apply_mode", "train_on_holdout")
    KIND_FIELD_NUMBER: _ClassVar[int]
    WAIT_WINDOW_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_REWARD_FIELD_NUMBER: _ClassVar[int]
    APPLY_MODE_FIELD_NUMBER: _ClassVar[int]
    TRAIN_ON_HOLDOUT_FIELD_NUMBER: _ClassVar[int]
    kind: RewardKind
    wait_window: _duration_pb2.Duration
    default_reward: float
    apply_mode: ApplyMode
    train_on_holdout: bool
    def __init__(self, kind: _Optional[_Union[RewardKind, str]] = ..., wait_window: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., default_reward: _Optional[float] = ..., apply_mode: _Optional[_Union[ApplyMode, str]] = ..., train_on_holdout: _Optional[bool] = ...) -> None: ...

class Arm(_message.Message):
    __slots__ = ("id", "metadata", "features", "active")
    ID_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    id: str
    metadata: _struct_pb2.Struct
    features: _containers.RepeatedScalarFieldContainer[float]
    active: bool
    def __init__(self, id: _Optional[str] = ..., metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., features: _Optional[_Iterable[float]] = ..., active: _Optional[bool] = ...) -> None: ...

class Experiment(_message.Message):
    __slots__ = ("namespace", "name", "family", "hyperparameters", "revision", "arms", "feature_schema", "reward", "epsilon", "slate_size", "holdout_fraction", "status", "create_time", "update_time", "version")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    FAMILY_FIELD_NUMBER: _ClassVar[int]
    HYPERPARAMETERS_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    ARMS_FIELD_NUMBER: _ClassVar[int]
    FEATURE_SCHEMA_FIELD_NUMBER: _ClassVar[int]
    REWARD_FIELD_NUMBER: _ClassVar[int]
    EPSILON_FIELD_NUMBER: _ClassVar[int]
    SLATE_SIZE_FIELD_NUMBER: _ClassVar[int]
    HOLDOUT_FRACTION_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    name: str
    family: str
    hyperparameters: _struct_pb2.Struct
    revision: int
    arms: _containers.RepeatedCompositeFieldContainer[Arm]
    feature_schema: FeatureSchema
    reward: RewardSpec
    epsilon: float
    slate_size: int
    holdout_fraction: float
    status: ExperimentStatus
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    version: int
    def __init__(self, namespace: _Optional[str] = ..., name: _Optional[str] = ..., family: _Optional[str] = ..., hyperparameters: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., revision: _Optional[int] = ..., arms: _Optional[_Iterable[_Union[Arm, _Mapping]]] = ..., feature_schema: _Optional[_Union[FeatureSchema, _Mapping]] = ..., reward: _Optional[_Union[RewardSpec, _Mapping]] = ..., epsilon: _Optional[float] = ..., slate_size: _Optional[int] = ..., holdout_fraction: _Optional[float] = ..., status: _Optional[_Union[ExperimentStatus, str]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., version: _Optional[int] = ...) -> None: ...

class CreateExperimentRequest(_message.Message):
    __slots__ = ("experiment",)
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    experiment: Experiment
    def __init__(self, experiment: _Optional[_Union[Experiment, _Mapping]] = ...) -> None: ...

class CreateExperimentResponse(_message.Message):
    __slots__ = ("experiment",)
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    experiment: Experiment
    def __init__(self, experiment: _Optional[_Union[Experiment, _Mapping]] = ...) -> None: ...

class GetExperimentRequest(_message.Message):
    __slots__ = ("namespace", "name")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    name: str
    def __init__(self, namespace: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class GetExperimentResponse(_message.Message):
    __slots__ = ("experiment",)
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    experiment: Experiment
    def __init__(self, experiment: _Optional[_Union[Experiment, _Mapping]] = ...) -> None: ...

class ListExperimentsRequest(_message.Message):
    __slots__ = ("namespace",)
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    def __init__(self, namespace: _Optional[str] = ...) -> None: ...

class ListExperimentsResponse(_message.Message):
    __slots__ = ("experiments",)
    EXPERIMENTS_FIELD_NUMBER: _ClassVar[int]
    experiments: _containers.RepeatedCompositeFieldContainer[Experiment]
    def __init__(self, experiments: _Optional[_Iterable[_Union[Experiment, _Mapping]]] = ...) -> None: ...

class UpdateExperimentRequest(_message.Message):
    __slots__ = ("namespace", "name", "add_arms", "retire_arm_ids", "status", "epsilon", "holdout_fraction", "hyperparameters")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ADD_ARMS_FIELD_NUMBER: _ClassVar[int]
    RETIRE_ARM_IDS_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    EPSILON_FIELD_NUMBER: _ClassVar[int]
    HOLDOUT_FRACTION_FIELD_NUMBER: _ClassVar[int]
    HYPERPARAMETERS_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    name: str
    add_arms: _containers.RepeatedCompositeFieldContainer[Arm]
    retire_arm_ids: _containers.RepeatedScalarFieldContainer[str]
    status: ExperimentStatus
    epsilon: float
    holdout_fraction: float
    hyperparameters: _struct_pb2.Struct
    def __init__(self, namespace: _Optional[str] = ..., name: _Optional[str] = ..., add_arms: _Optional[_Iterable[_Union[Arm, _Mapping]]] = ..., retire_arm_ids: _Optional[_Iterable[str]] = ..., status: _Optional[_Union[ExperimentStatus, str]] = ..., epsilon: _Optional[float] = ..., holdout_fraction: _Optional[float] = ..., hyperparameters: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class UpdateExperimentResponse(_message.Message):
    __slots__ = ("experiment", "new_revision")
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    NEW_REVISION_FIELD_NUMBER: _ClassVar[int]
    experiment: Experiment
    new_revision: bool
    def __init__(self, experiment: _Optional[_Union[Experiment, _Mapping]] = ..., new_revision: _Optional[bool] = ...) -> None: ...

class DenseVector(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, values: _Optional[_Iterable[float]] = ...) -> None: ...

class SparseVector(_message.Message):
    __slots__ = ("indices", "values")
    INDICES_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    indices: _containers.RepeatedScalarFieldContainer[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, indices: _Optional[_Iterable[int]] = ..., values: _Optional[_Iterable[float]] = ...) -> None: ...

class Context(_message.Message):
    __slots__ = ("dense", "sparse")
    DENSE_FIELD_NUMBER: _ClassVar[int]
    SPARSE_FIELD_NUMBER: _ClassVar[int]
    dense: DenseVector
    sparse: SparseVector
    def __init__(self, dense: _Optional[_Union[DenseVector, _Mapping]] = ..., sparse: _Optional[_Union[SparseVector, _Mapping]] = ...) -> None: ...

class ArmFeatures(_message.Message):
    __slots__ = ("arm_id", "values")
    ARM_ID_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    arm_id: str
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, arm_id: _Optional[str] = ..., values: _Optional[_Iterable[float]] = ...) -> None: ...

class SelectItem(_message.Message):
    __slots__ = ("event_id", "unit_id", "context", "arm_features", "eligible_arm_ids", "deferred")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    UNIT_ID_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    ARM_FEATURES_FIELD_NUMBER: _ClassVar[int]
    ELIGIBLE_ARM_IDS_FIELD_NUMBER: _ClassVar[int]
    DEFERRED_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    unit_id: str
    context: Context
    arm_features: _containers.RepeatedCompositeFieldContainer[ArmFeatures]
    eligible_arm_ids: _containers.RepeatedScalarFieldContainer[str]
    deferred: bool
    def __init__(self, event_id: _Optional[str] = ..., unit_id: _Optional[str] = ..., context: _Optional[_Union[Context, _Mapping]] = ..., arm_features: _Optional[_Iterable[_Union[ArmFeatures, _Mapping]]] = ..., eligible_arm_ids: _Optional[_Iterable[str]] = ..., deferred: _Optional[bool] = ...) -> None: ...

class SelectRequest(_message.Message):
    __slots__ = ("namespace", "name", "items")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    name: str
    items: _containers.RepeatedCompositeFieldContainer[SelectItem]
    def __init__(self, namespace: _Optional[str] = ..., name: _Optional[str] = ..., items: _Optional[_Iterable[_Union[SelectItem, _Mapping]]] = ...) -> None: ...

class Decision(_message.Message):
    __slots__ = ("event_id", "arm_ids", "propensity", "slot_propensities", "revision", "version", "holdout", "applied_watermark", "deferred", "replayed", "decide_time")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    ARM_IDS_FIELD_NUMBER: _ClassVar[int]
    PROPENSITY_FIELD_NUMBER: _ClassVar[int]
    SLOT_PROPENSITIES_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    HOLDOUT_FIELD_NUMBER: _ClassVar[int]
    APPLIED_WATERMARK_FIELD_NUMBER: _ClassVar[int]
    DEFERRED_FIELD_NUMBER: _ClassVar[int]
    REPLAYED_FIELD_NUMBER: _ClassVar[int]
    DECIDE_TIME_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    arm_ids: _containers.RepeatedScalarFieldContainer[str]
    propensity: float
    slot_propensities: _containers.RepeatedScalarFieldContainer[float]
    revision: int
    version: int
    holdout: bool
    applied_watermark: int
    deferred: bool
    replayed: bool
    decide_time: _timestamp_pb2.Timestamp
    def __init__(self, event_id: _Optional[str] = ..., arm_ids: _Optional[_Iterable[str]] = ..., propensity: _Optional[float] = ..., slot_propensities: _Optional[_Iterable[float]] = ..., revision: _Optional[int] = ..., version: _Optional[int] = ..., holdout: _Optional[bool] = ..., applied_watermark: _Optional[int] = ..., deferred: _Optional[bool] = ..., replayed: _Optional[bool] = ..., decide_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class SelectResponse(_message.Message):
    __slots__ = ("decisions",)
    DECISIONS_FIELD_NUMBER: _ClassVar[int]
    decisions: _containers.RepeatedCompositeFieldContainer[Decision]
    def __init__(self, decisions: _Optional[_Iterable[_Union[Decision, _Mapping]]] = ...) -> None: ...

class Reward(_message.Message):
    __slots__ = ("event_id", "value", "slot_values", "metrics", "reward_id")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    SLOT_VALUES_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    REWARD_ID_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    value: float
    slot_values: _containers.RepeatedScalarFieldContainer[float]
    metrics: _containers.ScalarMap[str, float]
    reward_id: str
    def __init__(self, event_id: _Optional[str] = ..., value: _Optional[float] = ..., slot_values: _Optional[_Iterable[float]] = ..., metrics: _Optional[_Mapping[str, float]] = ..., reward_id: _Optional[str] = ...) -> None: ...

class Observation(_message.Message):
    __slots__ = ("context", "arm_features", "arm_ids", "rewards", "propensity")
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    ARM_FEATURES_FIELD_NUMBER: _ClassVar[int]
    ARM_IDS_FIELD_NUMBER: _ClassVar[int]
    REWARDS_FIELD_NUMBER: _ClassVar[int]
    PROPENSITY_FIELD_NUMBER: _ClassVar[int]
    context: Context
    arm_features: _containers.RepeatedCompositeFieldContainer[ArmFeatures]
    arm_ids: _containers.RepeatedScalarFieldContainer[str]
    rewards: _containers.RepeatedScalarFieldContainer[float]
    propensity: float
    def __init__(self, context: _Optional[_Union[Context, _Mapping]] = ..., arm_features: _Optional[_Iterable[_Union[ArmFeatures, _Mapping]]] = ..., arm_ids: _Optional[_Iterable[str]] = ..., rewards: _Optional[_Iterable[float]] = ..., propensity: _Optional[float] = ...) -> None: ...

class UpdateRequest(_message.Message):
    __slots__ = ("namespace", "name", "rewards", "observations", "client_sequence")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    REWARDS_FIELD_NUMBER: _ClassVar[int]
    OBSERVATIONS_FIELD_NUMBER: _ClassVar[int]
    CLIENT_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    name: str
    rewards: _containers.RepeatedCompositeFieldContainer[Reward]
    observations: _containers.RepeatedCompositeFieldContainer[Observation]
    client_sequence: int
    def __init__(self, namespace: _Optional[str] = ..., name: _Optional[str] = ..., rewards: _Optional[_Iterable[_Union[Reward, _Mapping]]] = ..., observations: _Optional[_Iterable[_Union[Observation, _Mapping]]] = ..., client_sequence: _Optional[int] = ...) -> None: ...

class FeedbackAck(_message.Message):
    __slots__ = ("event_id", "sequence", "kind", "duplicate", "late", "orphan")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    LATE_FIELD_NUMBER: _ClassVar[int]
    ORPHAN_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    sequence: int
    kind: FeedbackKind
    duplicate: bool
    late: bool
    orphan: bool
    def __init__(self, event_id: _Optional[str] = ..., sequence: _Optional[int] = ..., kind: _Optional[_Union[FeedbackKind, str]] = ..., duplicate: _Optional[bool] = ..., late: _Optional[bool] = ..., orphan: _Optional[bool] = ...) -> None: ...

class UpdateResponse(_message.Message):
    __slots__ = ("acks",)
    ACKS_FIELD_NUMBER: _ClassVar[int]
    acks: _containers.RepeatedCompositeFieldContainer[FeedbackAck]
    def __init__(self, acks: _Optional[_Iterable[_Union[FeedbackAck, _Mapping]]] = ...) -> None: ...

class StreamUpdatesRequest(_message.Message):
    __slots__ = ("update",)
    UPDATE_FIELD_NUMBER: _ClassVar[int]
    update: UpdateRequest
    def __init__(self, update: _Optional[_Union[UpdateRequest, _Mapping]] = ...) -> None: ...

class StreamUpdatesResponse(_message.Message):
    __slots__ = ("committed_client_sequence", "acks")
    COMMITTED_CLIENT_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    ACKS_FIELD_NUMBER: _ClassVar[int]
    committed_client_sequence: int
    acks: _containers.RepeatedCompositeFieldContainer[FeedbackAck]
    def __init__(self, committed_client_sequence: _Optional[int] = ..., acks: _Optional[_Iterable[_Union[FeedbackAck, _Mapping]]] = ...) -> None: ...

class ActivateRequest(_message.Message):
    __slots__ = ("namespace", "name", "event_ids")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    EVENT_IDS_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    name: str
    event_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, namespace: _Optional[str] = ..., name: _Optional[str] = ..., event_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class ActivateResponse(_message.Message):
    __slots__ = ("activated",)
    ACTIVATED_FIELD_NUMBER: _ClassVar[int]
    activated: int
    def __init__(self, activated: _Optional[int] = ...) -> None: ...

class GetStatsRequest(_message.Message):
    __slots__ = ("namespace", "name")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    name: str
    def __init__(self, namespace: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class FeedbackCounts(_message.Message):
    __slots__ = ("rewards", "defaults", "duplicates", "late", "orphans", "observations")
    REWARDS_FIELD_NUMBER: _ClassVar[int]
    DEFAULTS_FIELD_NUMBER: _ClassVar[int]
    DUPLICATES_FIELD_NUMBER: _ClassVar[int]
    LATE_FIELD_NUMBER: _ClassVar[int]
    ORPHANS_FIELD_NUMBER: _ClassVar[int]
    OBSERVATIONS_FIELD_NUMBER: _ClassVar[int]
    rewards: int
    defaults: int
    duplicates: int
    late: int
    orphans: int
    observations: int
    def __init__(self, rewards: _Optional[int] = ..., defaults: _Optional[int] = ..., duplicates: _Optional[int] = ..., late: _Optional[int] = ..., orphans: _Optional[int] = ..., observations: _Optional[int] = ...) -> None: ...

class ArmStats(_message.Message):
    __slots__ = ("arm_id", "active", "decisions", "rewards", "mean_reward", "ci_low", "ci_high", "holdout_decisions", "model_mean", "model_low", "model_high", "prob_best")
    ARM_ID_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    DECISIONS_FIELD_NUMBER: _ClassVar[int]
    REWARDS_FIELD_NUMBER: _ClassVar[int]
    MEAN_REWARD_FIELD_NUMBER: _ClassVar[int]
    CI_LOW_FIELD_NUMBER: _ClassVar[int]
    CI_HIGH_FIELD_NUMBER: _ClassVar[int]
    HOLDOUT_DECISIONS_FIELD_NUMBER: _ClassVar[int]
    MODEL_MEAN_FIELD_NUMBER: _ClassVar[int]
    MODEL_LOW_FIELD_NUMBER: _ClassVar[int]
    MODEL_HIGH_FIELD_NUMBER: _ClassVar[int]
    PROB_BEST_FIELD_NUMBER: _ClassVar[int]
    arm_id: str
    active: bool
    decisions: int
    rewards: int
    mean_reward: float
    ci_low: float
    ci_high: float
    holdout_decisions: int
    model_mean: float
    model_low: float
    model_high: float
    prob_best: float
    def __init__(self, arm_id: _Optional[str] = ..., active: _Optional[bool] = ..., decisions: _Optional[int] = ..., rewards: _Optional[int] = ..., mean_reward: _Optional[float] = ..., ci_low: _Optional[float] = ..., ci_high: _Optional[float] = ..., holdout_decisions: _Optional[int] = ..., model_mean: _Optional[float] = ..., model_low: _Optional[float] = ..., model_high: _Optional[float] = ..., prob_best: _Optional[float] = ...) -> None: ...

class HoldoutLift(_message.Message):
    __slots__ = ("policy_rewards", "policy_mean", "holdout_rewards", "holdout_mean", "lift", "ci_low", "ci_high")
    POLICY_REWARDS_FIELD_NUMBER: _ClassVar[int]
    POLICY_MEAN_FIELD_NUMBER: _ClassVar[int]
    HOLDOUT_REWARDS_FIELD_NUMBER: _ClassVar[int]
    HOLDOUT_MEAN_FIELD_NUMBER: _ClassVar[int]
    LIFT_FIELD_NUMBER: _ClassVar[int]
    CI_LOW_FIELD_NUMBER: _ClassVar[int]
    CI_HIGH_FIELD_NUMBER: _ClassVar[int]
    policy_rewards: int
    policy_mean: float
    holdout_rewards: int
    holdout_mean: float
    lift: float
    ci_low: float
    ci_high: float
    def __init__(self, policy_rewards: _Optional[int] = ..., policy_mean: _Optional[float] = ..., holdout_rewards: _Optional[int] = ..., holdout_mean: _Optional[float] = ..., lift: _Optional[float] = ..., ci_low: _Optional[float] = ..., ci_high: _Optional[float] = ...) -> None: ...

class GetStatsResponse(_message.Message):
    __slots__ = ("decisions", "feedback", "arms", "revision", "version", "applied_watermark", "holdout_decisions", "model_method", "prob_best_method", "prob_best_draws", "regret", "lift", "identified")
    DECISIONS_FIELD_NUMBER: _ClassVar[int]
    FEEDBACK_FIELD_NUMBER: _ClassVar[int]
    ARMS_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    APPLIED_WATERMARK_FIELD_NUMBER: _ClassVar[int]
    HOLDOUT_DECISIONS_FIELD_NUMBER: _ClassVar[int]
    MODEL_METHOD_FIELD_NUMBER: _ClassVar[int]
    PROB_BEST_METHOD_FIELD_NUMBER: _ClassVar[int]
    PROB_BEST_DRAWS_FIELD_NUMBER: _ClassVar[int]
    REGRET_FIELD_NUMBER: _ClassVar[int]
    LIFT_FIELD_NUMBER: _ClassVar[int]
    IDENTIFIED_FIELD_NUMBER: _ClassVar[int]
    decisions: int
    feedback: FeedbackCounts
    arms: _containers.RepeatedCompositeFieldContainer[ArmStats]
    revision: int
    version: int
    applied_watermark: int
    holdout_decisions: int
    model_method: str
    prob_best_method: str
    prob_best_draws: int
    regret: float
    lift: HoldoutLift
    identified: Identification
    def __init__(self, decisions: _Optional[int] = ..., feedback: _Optional[_Union[FeedbackCounts, _Mapping]] = ..., arms: _Optional[_Iterable[_Union[ArmStats, _Mapping]]] = ..., revision: _Optional[int] = ..., version: _Optional[int] = ..., applied_watermark: _Optional[int] = ..., holdout_decisions: _Optional[int] = ..., model_method: _Optional[str] = ..., prob_best_method: _Optional[str] = ..., prob_best_draws: _Optional[int] = ..., regret: _Optional[float] = ..., lift: _Optional[_Union[HoldoutLift, _Mapping]] = ..., identified: _Optional[_Union[Identification, _Mapping]] = ...) -> None: ...

class Identification(_message.Message):
    __slots__ = ("arm_id", "confidence", "method")
    ARM_ID_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    arm_id: str
    confidence: float
    method: str
    def __init__(self, arm_id: _Optional[str] = ..., confidence: _Optional[float] = ..., method: _Optional[str] = ...) -> None: ...
