"""Read-only aggregates over the event log for GetStats (per-arm decision and reward sums)."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from .schema import decisions, feedback


@dataclass(frozen=True, slots=True)
class ArmSummary:
    decisions: int
    holdout_decisions: int
    rewards: int  # applied-kind rewards joined to this arm's decisions, plus observations
    reward_sum: float
    reward_sumsq: float


def arm_summaries(engine: sa.Engine, experiment_id: int) -> dict[int, ArmSummary]:
    """Per first-chosen slot: decision counts and the sums of winning rewards (reward/default)
    and observations. One snapshot read."""
    d_q = (
        sa.select(
            decisions.c.arm_slot,
            sa.func.count(),
            sa.func.sum(sa.case((decisions.c.holdout, 1), else_=0)),
        )
        .where(decisions.c.experiment_id == experiment_id)
        .group_by(decisions.c.arm_slot)
    )
    joined = feedback.join(
        decisions,
        sa.and_(
            decisions.c.experiment_id == feedback.c.experiment_id,
            decisions.c.event_id == feedback.c.event_id,
        ),
    )
    r_q = (
        sa.select(
            decisions.c.arm_slot,
            sa.func.count(),
            sa.func.sum(feedback.c.reward),
            sa.func.sum(feedback.c.reward * feedback.c.reward),
        )
        .select_from(joined)
        .where(
            feedback.c.experiment_id == experiment_id, feedback.c.kind.in_(("reward", "default"))
        )
        .group_by(decisions.c.arm_slot)
    )
    o_q = (
        sa.select(
            feedback.c.arm_slot,
            sa.func.count(),
            sa.func.sum(feedback.c.reward),
            sa.func.sum(feedback.c.reward * feedback.c.reward),
        )
        .where(feedback.c.experiment_id == experiment_id, feedback.c.kind == "observation")
        .group_by(feedback.c.arm_slot)
    )
    acc: dict[int, list[float]] = {}
    with engine.connect() as conn:
        for slot, n, h in conn.execute(d_q):
            acc.setdefault(int(slot), [0, 0, 0, 0.0, 0.0])[0:2] = [int(n), int(h or 0)]
        for q in (r_q, o_q):
            for slot, n, s, s2 in conn.execute(q):
                a = acc.setdefault(int(slot), [0, 0, 0, 0.0, 0.0])
                a[2] += int(n)
                a[3] += float(s or 0.0)
                a[4] += float(s2 or 0.0)
    return {k: ArmSummary(int(v[0]), int(v[1]), int(v[2]), v[3], v[4]) for k, v in acc.items()}
