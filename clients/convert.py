"""Conversions between the client's plain Python/numpy values and ``banditd.v1`` messages.

Shape checks live here (a batch of contexts, per-arm features); value checks (dimension, NaN,
index bounds) are the server's, so the client cannot disagree with it about what is valid.
"""

from __future__ import annotations

import datetime as dt
import math
import numbers
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, cast

import numpy as np
from banditd.v1 import bandit_pb2 as pb
from google.protobuf import json_format, struct_pb2, timestamp_pb2

from .errors import InvalidArgument
from .models import (
    Ack,
    ArmInfo,
    ArmSpec,
    ArmStats,
    Decision,
    ExperimentInfo,
    FeedbackCounts,
    HoldoutLift,
    Observation,
    Reward,
    Stats,
)

__all__ = [
    "ContextsLike",
    "ArmFeaturesLike",
    "arm_features_from_pb",
    "context_from_pb",
    "to_arm_features",
    "to_context",
    "to_contexts",
    "to_eligible",
]

ContextsLike = Any  # None | int | array [B, d] | [d] | {index: value} | sequence of those | scipy
ArmFeaturesLike = Any  # None | array [B, N, d] | [N, d] | {arm: vector | [B, d]} | [{arm: vector}]


# ---------------------------------------------------------------------------------------------
# Plain values


def plain(obj: Any) -> Any:
    """Numpy scalars/arrays and tuples to JSON-like Python values (what ``Struct`` accepts)."""
    if isinstance(obj, Mapping):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, np.ndarray):
        return plain(obj.tolist())
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def to_struct(values: Mapping[str, Any] | None, what: str) -> struct_pb2.Struct | None:
    if values is None:
        return None
    if not isinstance(values, Mapping):
        raise InvalidArgument(f"{what}: expected a mapping, got {type(values).__name__}")
    s = struct_pb2.Struct()
    try:
        s.update(plain(values))
    except (ValueError, TypeError) as e:
        raise InvalidArgument(f"{what}: not representable as JSON ({e})") from None
    return s


def from_struct(s: struct_pb2.Struct) -> dict[str, Any]:
    # Struct numbers are doubles: integers come back as floats (256 -> 256.0).
    return cast(dict[str, Any], json_format.MessageToDict(s))


def _time(msg: Any, name: str) -> dt.datetime | None:
    if not msg.HasField(name):
        return None
    ts: timestamp_pb2.Timestamp = getattr(msg, name)
    return ts.ToDatetime(tzinfo=dt.UTC)


def _enum_name(enum: Any, prefix: str, value: int) -> str:
    try:
        name = str(enum.Name(value))
    except ValueError:  # a value added to the proto after this client was built
        return str(value)
    return name.removeprefix(prefix).lower()


def _enum_value(enum: Any, prefix: str, name: str, what: str) -> int:
    try:
        return int(enum.Value(prefix + name.upper()))
    except ValueError:
        names: list[str] = list(enum.keys())
        choices = ", ".join(
            n.removeprefix(prefix).lower() for n in names if not n.endswith("UNSPECIFIED")
        )
        raise InvalidArgument(f"{what}: must be one of {choices}, got {name!r}") from None


def reward_kind_value(name: str) -> int:
    return _enum_value(pb.RewardKind, "REWARD_KIND_", name, "reward_kind")


def apply_mode_value(name: str) -> int:
    return _enum_value(pb.ApplyMode, "APPLY_MODE_", name, "apply_mode")


def status_value(name: str) -> int:
    return _enum_value(pb.ExperimentStatus, "EXPERIMENT_STATUS_", name, "status")


# ---------------------------------------------------------------------------------------------
# Vectors and contexts


def _dense_values(x: Any, what: str) -> list[float]:
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise InvalidArgument(f"{what}: expected a vector of numbers") from None
    if arr.ndim != 1:
        raise InvalidArgument(f"{what}: expected a 1-D vector, got shape {arr.shape}")
    return cast(list[float], arr.tolist())


def _sparse(x: Mapping[Any, Any], what: str) -> pb.SparseVector:
    pairs: dict[int, float] = {}
    for k, v in x.items():
        try:
            idx = int(k)
            if isinstance(k, float) and k != idx:
                raise ValueError
        except (TypeError, ValueError):
            raise InvalidArgument(f"{what}: sparse index {k!r} is not an integer") from None
        if idx < 0 or idx >= 2**32:
            raise InvalidArgument(f"{what}: sparse index {idx} is out of range")
        if idx in pairs:
            raise InvalidArgument(f"{what}: sparse index {idx} is repeated")
        try:
            pairs[idx] = float(v)
        except (TypeError, ValueError):
            raise InvalidArgument(f"{what}[{k!r}]: expected a number, got {v!r}") from None
    # Ascending indices: canonical, and what a CSR consumer on the server side wants anyway.
    order = sorted(pairs)
    return pb.SparseVector(indices=order, values=[pairs[i] for i in order])


def _is_number(x: Any) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def to_context(x: Any, what: str = "context") -> pb.Context:
    """One context: ``{index: value}`` is sparse, anything vector-like is dense."""
    if isinstance(x, Mapping):
        return pb.Context(sparse=_sparse(x, what))
    if hasattr(x, "tocoo"):  # a scipy.sparse row
        coo = x.tocoo()
        if coo.shape[0] != 1:
            raise InvalidArgument(f"{what}: expected one sparse row, got shape {coo.shape}")
        pairs = dict(zip(coo.col.tolist(), coo.data.tolist(), strict=True))
        return pb.Context(sparse=_sparse(pairs, what))
    return pb.Context(dense=pb.DenseVector(values=_dense_values(x, what)))


def to_contexts(contexts: ContextsLike, what: str = "contexts") -> list[pb.Context | None]:
    """A batch of contexts, one per decision; ``None`` entries mean "no context".

    Accepted: ``None`` (one non-contextual decision); an int ``n`` (n non-contextual decisions);
    a 2-D array ``[B, d]``; a 1-D vector (one dense context); a ``{index: value}`` dict (one
    sparse context); a scipy.sparse matrix ``[B, d]``; or a sequence mixing vectors, dicts and
    None, one per decision.
    """
    if contexts is None:
        return [None]
    if isinstance(contexts, bool):
        raise InvalidArgument(f"{what}: expected contexts or a count, got a bool")
    if isinstance(contexts, numbers.Integral):
        n = int(contexts)
        if n < 1:
            raise InvalidArgument(f"{what}: the count of decisions must be at least 1, got {n}")
        return [None] * n
    if isinstance(contexts, Mapping):
        return [to_context(contexts, f"{what}[0]")]
    if hasattr(contexts, "tocsr"):  # scipy.sparse matrix: one sparse context per row
        csr = contexts.tocsr()
        out: list[pb.Context | None] = []
        for i in range(csr.shape[0]):
            lo, hi = csr.indptr[i], csr.indptr[i + 1]
            idx = csr.indices[lo:hi].tolist()
            val = csr.data[lo:hi].tolist()
            out.append(pb.Context(sparse=_sparse(dict(zip(idx, val, strict=True)), f"{what}[{i}]")))
        if not out:
            raise InvalidArgument(f"{what}: empty batch")
        return out
    if isinstance(contexts, np.ndarray):
        if contexts.ndim == 1:
            return [to_context(contexts, f"{what}[0]")]
        if contexts.ndim != 2:
            raise InvalidArgument(f"{what}: expected shape [B, d], got {contexts.shape}")
        if contexts.shape[0] == 0:
            raise InvalidArgument(f"{what}: empty batch")
        arr = np.asarray(contexts, dtype=np.float64)
        return [pb.Context(dense=pb.DenseVector(values=row)) for row in arr.tolist()]
    if isinstance(contexts, (str, bytes)):
        raise InvalidArgument(f"{what}: expected numbers, got a string")
    if not isinstance(contexts, Iterable):
        raise InvalidArgument(f"{what}: unsupported type {type(contexts).__name__}")
    items = list(contexts)
    if not items:
        raise InvalidArgument(f"{what}: empty batch")
    if all(_is_number(v) for v in items):
        return [to_context(items, f"{what}[0]")]
    return [
        None if item is None else to_context(item, f"{what}[{i}]") for i, item in enumerate(items)
    ]


def context_from_pb(ctx: pb.Context | None) -> np.ndarray | dict[int, float] | None:
    """Inverse of :func:`to_context`: a float64 array, an ``{index: value}`` dict or None."""
    if ctx is None:
        return None
    kind = ctx.WhichOneof("kind")
    if kind == "dense":
        return np.asarray(ctx.dense.values, dtype=np.float64)
    if kind == "sparse":
        return dict(zip(ctx.sparse.indices, ctx.sparse.values, strict=True))
    return None


def _is_arm_id_seq(x: Any) -> bool:
    return isinstance(x, Sequence) and not isinstance(x, str) and all(isinstance(v, str) for v in x)


def to_eligible(eligible: Any, batch: int) -> list[list[str]]:
    """Eligible arm ids per decision: None (every active arm), one list shared by the batch, or
    one list per decision."""
    if eligible is None:
        return [[] for _ in range(batch)]
    if isinstance(eligible, str):
        raise InvalidArgument("eligible: expected a list of arm ids, got a string")
    if isinstance(eligible, np.ndarray):
        eligible = eligible.tolist()
    if _is_arm_id_seq(eligible):
        if not eligible:
            raise InvalidArgument("eligible: empty; pass None for every active arm")
        return [list(eligible) for _ in range(batch)]
    per_item = list(eligible)
    if len(per_item) != batch:
        raise InvalidArgument(
            f"eligible: {len(per_item)} lists for {batch} decisions; pass one list per decision "
            "or one list for all"
        )
    out: list[list[str]] = []
    for i, e in enumerate(per_item):
        if e is None:
            out.append([])
        elif _is_arm_id_seq(e):
            out.append(list(e))
        else:
            raise InvalidArgument(f"eligible[{i}]: expected a list of arm ids")
    return out


def shared_eligible(eligible: Any) -> list[str] | None:
    """The single arm-id list shared by every decision, when ``eligible`` is one."""
    if isinstance(eligible, np.ndarray):
        eligible = eligible.tolist()
    if eligible is not None and _is_arm_id_seq(eligible) and eligible:
        return list(eligible)
    return None


def _arm_map(x: Mapping[Any, Any], what: str) -> list[pb.ArmFeatures]:
    return [
        pb.ArmFeatures(arm_id=str(arm), values=_dense_values(v, f"{what}[{arm!r}]"))
        for arm, v in x.items()
    ]


def to_arm_features(
    arm_features: ArmFeaturesLike,
    batch: int,
    arm_ids: Sequence[str] | None = None,
    what: str = "arm_features",
) -> list[list[pb.ArmFeatures]]:
    """Per-request arm features, one list per decision.

    Accepted: None; ``{arm_id: vector}`` (shared by the batch) or ``{arm_id: array [B, d]}``
    (row b for decision b); a sequence of ``{arm_id: vector}`` (one per decision); or an array
    ``[B, N, d]`` / ``[N, d]`` (shared) whose N rows follow ``arm_ids``.
    """
    if arm_features is None:
        return [[] for _ in range(batch)]
    if isinstance(arm_features, Mapping):
        shared: list[pb.ArmFeatures] = []
        per_row: dict[str, np.ndarray] = {}
        for arm, v in arm_features.items():
            try:
                arr = np.asarray(v, dtype=np.float64)
            except (TypeError, ValueError):
                raise InvalidArgument(f"{what}[{arm!r}]: expected a vector of numbers") from None
            if arr.ndim == 1:
                shared.append(pb.ArmFeatures(arm_id=str(arm), values=arr.tolist()))
            elif arr.ndim == 2 and arr.shape[0] == batch:
                per_row[str(arm)] = arr
            else:
                raise InvalidArgument(
                    f"{what}[{arm!r}]: expected shape [d] or [{batch}, d], got {arr.shape}"
                )
        out = []
        for b in range(batch):
            row = list(shared)
            row.extend(pb.ArmFeatures(arm_id=a, values=m[b].tolist()) for a, m in per_row.items())
            out.append(row)
        return out
    per_item = (
        isinstance(arm_features, Sequence)
        and not isinstance(arm_features, str)
        and any(isinstance(m, Mapping) for m in arm_features)
    )
    if not per_item and isinstance(arm_features, (np.ndarray, Sequence)):
        try:
            arr = np.asarray(arm_features, dtype=np.float64)
        except (TypeError, ValueError):
            raise InvalidArgument(f"{what}: expected an array [B, N, d] or [N, d]") from None
        if arr.ndim == 2:
            arr = np.broadcast_to(arr, (batch, *arr.shape))
        if arr.ndim != 3 or arr.shape[0] != batch:
            raise InvalidArgument(
                f"{what}: expected shape [{batch}, N, d] or [N, d], got {arr.shape}"
            )
        if arm_ids is None:
            raise InvalidArgument(f"{what}: an array needs the arm ids its rows follow")
        if len(arm_ids) != arr.shape[1]:
            raise InvalidArgument(
                f"{what}: {arr.shape[1]} arm rows but {len(arm_ids)} arm ids ({', '.join(arm_ids)})"
            )
        return [
            [pb.ArmFeatures(arm_id=a, values=arr[b, j].tolist()) for j, a in enumerate(arm_ids)]
            for b in range(batch)
        ]
    if per_item:
        if len(arm_features) != batch:
            raise InvalidArgument(f"{what}: {len(arm_features)} mappings for {batch} decisions")
        return [
            [] if m is None else _arm_map(m, f"{what}[{b}]") for b, m in enumerate(arm_features)
        ]
    raise InvalidArgument(f"{what}: unsupported type {type(arm_features).__name__}")


def arm_features_from_pb(items: Iterable[pb.ArmFeatures]) -> dict[str, np.ndarray]:
    return {a.arm_id: np.asarray(a.values, dtype=np.float64) for a in items}


# ---------------------------------------------------------------------------------------------
# Experiments


def to_arms(
    arms: Sequence[str | ArmSpec],
    features: Any = None,
    metadata: Mapping[str, Mapping[str, Any]] | None = None,
    what: str = "arms",
) -> list[pb.Arm]:
    """Arms from ids or :class:`ArmSpec`; ``features`` is ``{arm: vector}`` or ``[N, d]`` in arm
    order, ``metadata`` is ``{arm: {key: value}}``."""
    if isinstance(arms, str):
        raise InvalidArgument(f"{what}: expected a list of arm ids, got a string")
    specs = [a if isinstance(a, ArmSpec) else ArmSpec(id=str(a)) for a in arms]
    ids = [s.id for s in specs]
    feats: dict[str, Any] = {}
    if isinstance(features, Mapping):
        feats = {str(k): v for k, v in features.items()}
    elif features is not None:
        arr = np.asarray(features, dtype=np.float64)
        if arr.ndim != 2 or arr.shape[0] != len(ids):
            raise InvalidArgument(
                f"arm_features: expected shape [{len(ids)}, d] in arm order, got {arr.shape}"
            )
        feats = dict(zip(ids, arr, strict=True))
    meta = {str(k): v for k, v in (metadata or {}).items()}
    for k in [*feats, *meta]:
        if k not in ids:
            raise InvalidArgument(f"arm_features/arm_metadata: {k!r} is not one of the arms")
    out = []
    for i, s in enumerate(specs):
        arm = pb.Arm(id=s.id)
        md = s.metadata if s.metadata is not None else meta.get(s.id)
        if md is not None:
            st = to_struct(md, f"{what}[{i}].metadata")
            assert st is not None
            arm.metadata.CopyFrom(st)
        fv = s.features if s.features is not None else feats.get(s.id)
        if fv is not None:
            arm.features.extend(_dense_values(fv, f"{what}[{i}].features"))
        out.append(arm)
    return out


def duration_seconds(msg: Any, name: str) -> float | None:
    if not msg.HasField(name):
        return None
    d = getattr(msg, name)
    secs = d.seconds + d.nanos / 1e9
    return secs if secs > 0 else None


def set_duration(target: Any, seconds: float, what: str) -> None:
    if not math.isfinite(seconds) or seconds < 0:
        raise InvalidArgument(f"{what}: must be a finite number of seconds >= 0, got {seconds}")
    target.FromNanoseconds(round(seconds * 1e9))


def experiment_from_pb(e: pb.Experiment) -> ExperimentInfo:
    fs, rw = e.feature_schema, e.reward
    return ExperimentInfo(
        namespace=e.namespace,
        name=e.name,
        family=e.family,
        hyperparameters=from_struct(e.hyperparameters),
        revision=e.revision,
        arms=tuple(
            ArmInfo(
                id=a.id,
                active=a.active,
                metadata=from_struct(a.metadata),
                features=tuple(a.features),
            )
            for a in e.arms
        ),
        dim=fs.dimension,
        sparse=fs.sparse,
        arm_feature_dim=fs.arm_feature_dimension,
        schema_name=fs.name,
        schema_version=fs.version,
        reward_kind=_enum_name(pb.RewardKind, "REWARD_KIND_", rw.kind),
        wait_window=duration_seconds(rw, "wait_window"),
        default_reward=rw.default_reward if rw.HasField("default_reward") else None,
        apply_mode=_enum_name(pb.ApplyMode, "APPLY_MODE_", rw.apply_mode),
        train_on_holdout=rw.train_on_holdout,
        epsilon=e.epsilon,
        slate_size=e.slate_size,
        holdout_fraction=e.holdout_fraction,
        status=_enum_name(pb.ExperimentStatus, "EXPERIMENT_STATUS_", e.status),
        version=e.version,
        create_time=_time(e, "create_time"),
        update_time=_time(e, "update_time"),
    )


# ---------------------------------------------------------------------------------------------
# Decisions and feedback


def decision_from_pb(d: pb.Decision) -> Decision:
    return Decision(
        event_id=d.event_id,
        arm_ids=tuple(d.arm_ids),
        propensity=d.propensity,
        slot_propensities=tuple(d.slot_propensities),
        revision=d.revision,
        version=d.version,
        holdout=d.holdout,
        applied_watermark=d.applied_watermark,
        deferred=d.deferred,
        replayed=d.replayed,
        decide_time=_time(d, "decide_time"),
    )


def to_reward(r: Reward, what: str) -> pb.Reward:
    if not r.event_id:
        raise InvalidArgument(f"{what}.event_id: empty")
    try:
        msg = pb.Reward(
            event_id=str(r.event_id),
            value=float(r.value),
            slot_values=[float(v) for v in r.slot_values],
            metrics={str(k): float(v) for k, v in (r.metrics or {}).items()},
            reward_id=r.reward_id,
        )
    except (TypeError, ValueError) as e:
        raise InvalidArgument(f"{what}: {e}") from None
    return msg


def to_observation(o: Observation, what: str) -> pb.Observation:
    arm_ids = [o.arm_ids] if isinstance(o.arm_ids, str) else [str(a) for a in o.arm_ids]
    raw: Any = o.rewards
    rewards = [raw] if _is_number(raw) else list(raw)
    msg = pb.Observation(arm_ids=arm_ids)
    try:
        msg.rewards.extend(float(v) for v in rewards)
    except (TypeError, ValueError):
        raise InvalidArgument(f"{what}.rewards: expected numbers") from None
    if o.context is not None:
        msg.context.CopyFrom(to_context(o.context, f"{what}.context"))
    if o.arm_features is not None:
        if not isinstance(o.arm_features, Mapping):
            raise InvalidArgument(f"{what}.arm_features: expected {{arm_id: vector}}")
        msg.arm_features.extend(_arm_map(o.arm_features, f"{what}.arm_features"))
    if o.propensity is not None:
        msg.propensity = float(o.propensity)
    return msg


def ack_from_pb(a: pb.FeedbackAck) -> Ack:
    return Ack(
        event_id=a.event_id,
        sequence=a.sequence,
        kind=_enum_name(pb.FeedbackKind, "FEEDBACK_KIND_", a.kind),
        duplicate=a.duplicate,
        late=a.late,
        orphan=a.orphan,
    )


def stats_from_pb(s: pb.GetStatsResponse) -> Stats:
    f = s.feedback
    return Stats(
        decisions=s.decisions,
        feedback=FeedbackCounts(
            rewards=f.rewards,
            defaults=f.defaults,
            duplicates=f.duplicates,
            late=f.late,
            orphans=f.orphans,
            observations=f.observations,
        ),
        arms=tuple(
            ArmStats(
                arm_id=a.arm_id,
                active=a.active,
                decisions=a.decisions,
                rewards=a.rewards,
                mean_reward=a.mean_reward,
                ci_low=a.ci_low,
                ci_high=a.ci_high,
                holdout_decisions=a.holdout_decisions,
                model_mean=a.model_mean if a.HasField("model_mean") else None,
                model_low=a.model_low if a.HasField("model_low") else None,
                model_high=a.model_high if a.HasField("model_high") else None,
                prob_best=a.prob_best if a.HasField("prob_best") else None,
            )
            for a in s.arms
        ),
        revision=s.revision,
        version=s.version,
        applied_watermark=s.applied_watermark,
        holdout_decisions=s.holdout_decisions,
        model_method=s.model_method,
        prob_best_method=s.prob_best_method,
        prob_best_draws=s.prob_best_draws,
        regret=s.regret if s.HasField("regret") else None,
        lift=_lift_from_pb(s.lift) if s.HasField("lift") else None,
    )


def _lift_from_pb(x: pb.HoldoutLift) -> HoldoutLift:
    return HoldoutLift(
        policy_rewards=x.policy_rewards,
        policy_mean=x.policy_mean,
        holdout_rewards=x.holdout_rewards,
        holdout_mean=x.holdout_mean,
        lift=x.lift,
        ci_low=x.ci_low,
        ci_high=x.ci_high,
    )
