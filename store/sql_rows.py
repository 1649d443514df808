"""Row conversion for ``sql``: dataclasses (``rows``) <-> column dicts, and the joined selects.

Per-slot tuples are packed here; the first chosen slot, the decision's propensity and the reward
are also written to scalar columns so per-arm statistics can be computed in SQL.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import RowMapping

from .packing import pack_f64, pack_i32, unpack_f64_tuple, unpack_i32_tuple
from .rows import (
    ApplyRecord,
    Arm,
    Checkpoint,
    Decision,
    Experiment,
    Feedback,
    FeedbackKind,
    Pending,
    Revision,
    RevisionSpec,
)
from .schema import decisions, experiments, feedback, namespaces


def experiment_select() -> sa.Select[Any]:
    return sa.select(experiments, namespaces.c.name.label("namespace")).join(
        namespaces, namespaces.c.id == experiments.c.namespace_id
    )


def to_experiment(m: RowMapping) -> Experiment:
    return Experiment(
        id=m["id"],
        namespace=m["namespace"],
        name=m["name"],
        family=m["family"],
        status=m["status"],
        revision=m["revision"],
        config=m["config"],
        created_at=m["created_at"],
        updated_at=m["updated_at"],
    )


def revision_values(experiment_id: int, r: RevisionSpec, now: float) -> dict[str, Any]:
    return {
        "experiment_id": experiment_id,
        "revision": r.revision,
        "family": r.family,
        "hyperparameters": dict(r.hyperparameters),
        "dim": r.dim,
        "feature_schema": r.feature_schema,
        "feature_schema_version": r.feature_schema_version,
        "created_at": now,
    }


def to_revision(m: RowMapping) -> Revision:
    return Revision(
        experiment_id=m["experiment_id"],
        revision=m["revision"],
        family=m["family"],
        hyperparameters=m["hyperparameters"],
        dim=m["dim"],
        feature_schema=m["feature_schema"],
        feature_schema_version=m["feature_schema_version"],
        created_at=m["created_at"],
    )


def to_arm(m: RowMapping) -> Arm:
    return Arm(
        experiment_id=m["experiment_id"],
        slot=m["slot"],
        arm_id=m["arm_id"],
        metadata=m["metadata"],
        features=_bytes(m["features"]),
        active=bool(m["active"]),
        created_at=m["created_at"],
        retired_at=m["retired_at"],
    )


def _bytes(v: Any) -> bytes | None:
    return None if v is None else bytes(v)


DECISION_COLUMNS = (
    "experiment_id",
    "event_id",
    "revision",
    "version",
    "unit_id",
    "arm_slot",
    "propensity",
    "chosen",
    "slot_propensities",
    "context",
    "sparse_indices",
    "arm_feature_slots",
    "arm_features",
    "eligible",
    "holdout",
    "deferred",
    "created_at",
    "deadline",
)


def decision_row(d: Decision) -> tuple[Any, ...]:
    """The decision's column values in ``DECISION_COLUMNS`` order."""
    if not d.chosen or len(d.chosen) != len(d.slot_propensities):
        raise ValueError(
            f"chosen: decision {d.event_id!r} needs one propensity per chosen slot "
            f"(got {len(d.chosen)} slots, {len(d.slot_propensities)} propensities)"
        )
    return (
        d.experiment_id,
        d.event_id,
        d.revision,
        d.version,
        d.unit_id,
        int(d.chosen[0]),
        float(d.propensity),
        pack_i32(d.chosen),
        pack_f64(d.slot_propensities),
        d.context,
        d.sparse_indices,
        d.arm_feature_slots,
        d.arm_features,
        d.eligible,
        d.holdout,
        d.deferred,
        d.created_at,
        d.deadline,
    )


def to_decision(m: RowMapping, p: str = "") -> Decision:
    return Decision(
        experiment_id=m[p + "experiment_id"],
        event_id=m[p + "event_id"],
        revision=m[p + "revision"],
        version=m[p + "version"],
        chosen=unpack_i32_tuple(m[p + "chosen"]),
        slot_propensities=unpack_f64_tuple(m[p + "slot_propensities"]),
        created_at=m[p + "created_at"],
        context=_bytes(m[p + "context"]),
        sparse_indices=_bytes(m[p + "sparse_indices"]),
        arm_feature_slots=_bytes(m[p + "arm_feature_slots"]),
        arm_features=_bytes(m[p + "arm_features"]),
        eligible=_bytes(m[p + "eligible"]),
        unit_id=m[p + "unit_id"],
        holdout=bool(m[p + "holdout"]),
        deferred=bool(m[p + "deferred"]),
        deadline=m[p + "deadline"],
    )


def feedback_values(f: Feedback, kind: FeedbackKind, now: float) -> dict[str, Any]:
    return {
        "experiment_id": f.experiment_id,
        "event_id": f.event_id,
        "kind": kind,
        "reward": float(f.reward),
        "slot_rewards": pack_f64(f.slot_rewards) if f.slot_rewards else None,
        "metrics": None if f.metrics is None else dict(f.metrics),
        "reward_id": f.reward_id,
        "client_seq": f.client_seq,
        "arm_slot": int(f.chosen[0]) if f.chosen else None,
        "chosen": pack_i32(f.chosen) if f.chosen else None,
        "propensity": f.propensity,
        "context": f.context,
        "sparse_indices": f.sparse_indices,
        "arm_feature_slots": f.arm_feature_slots,
        "arm_features": f.arm_features,
        "event_time": f.event_time,
        "committed_at": now if f.committed_at is None else f.committed_at,
        "applied_version": None,
    }


def to_feedback(m: RowMapping) -> Feedback:
    slot_rewards = m["slot_rewards"]
    chosen = m["chosen"]
    return Feedback(
        experiment_id=m["experiment_id"],
        kind=m["kind"],
        reward=m["reward"],
        event_id=m["event_id"],
        slot_rewards=() if slot_rewards is None else unpack_f64_tuple(slot_rewards),
        metrics=m["metrics"],
        reward_id=m["reward_id"],
        client_seq=m["client_seq"],
        chosen=() if chosen is None else unpack_i32_tuple(chosen),
        propensity=m["propensity"],
        context=_bytes(m["context"]),
        sparse_indices=_bytes(m["sparse_indices"]),
        arm_feature_slots=_bytes(m["arm_feature_slots"]),
        arm_features=_bytes(m["arm_features"]),
        event_time=m["event_time"],
        committed_at=m["committed_at"],
        seq=int(m["seq"]),
        applied_version=m["applied_version"],
    )


_D = "d_"  # label prefix of the joined decision's columns


def pending_select() -> sa.Select[Any]:
    joined = feedback.outerjoin(
        decisions,
        sa.and_(
            decisions.c.experiment_id == feedback.c.experiment_id,
            decisions.c.event_id == feedback.c.event_id,
        ),
    )
    return sa.select(feedback, *[c.label(_D + c.name) for c in decisions.c]).select_from(joined)


def to_pending(m: RowMapping) -> Pending:
    decision = None if m[_D + "event_id"] is None else to_decision(m, _D)
    return Pending(to_feedback(m), decision)


def to_apply_record(m: RowMapping) -> ApplyRecord:
    return ApplyRecord(
        experiment_id=m["experiment_id"],
        version_from=m["version_from"],
        version_to=m["version_to"],
        fence=m["fence"],
        n_rows=m["n_rows"],
        created_at=m["created_at"],
    )


def to_checkpoint(m: RowMapping) -> Checkpoint:
    return Checkpoint(
        experiment_id=m["experiment_id"],
        revision=m["revision"],
        version=m["version"],
        fence=m["fence"],
        blob=bytes(m["blob"]),
        created_at=m["created_at"],
    )
