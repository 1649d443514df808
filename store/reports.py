"""Read-only aggregates over the event log for GetStats: per-arm decision and reward sums, the
policy/holdout split of reward sums, and feedback counts by kind."""

from __future__ import annotations

from dataclasses import dataclass, field

import sqlalchemy as sa

from .rows import FEEDBACK_KINDS, WINNING_KINDS
from .schema import decisions, feedback


@dataclass(frozen=True, slots=True)
class RewardSums:
    """Count, sum and sum of squares of some rewards: enough for a mean and a sample variance."""

    n: int = 0
    total: float = 0.0
    sumsq: float = 0.0

    def __add__(self, other: RewardSums) -> RewardSums:
        return RewardSums(self.n + other.n, self.total + other.total, self.sumsq + other.sumsq)


@dataclass(frozen=True, slots=True)
class ArmSummary:
    decisions: int = 0
    holdout_decisions: int = 0
    # Winning rewards (reward/default) joined to this arm's decisions, plus observations of it.
    rewards: RewardSums = RewardSums()


@dataclass(frozen=True, slots=True)
class Report:
    arms: dict[int, ArmSummary]  # by first-chosen slot; slots without rows are absent
    policy: RewardSums  # winning rewards joined to non-holdout decisions
    holdout: RewardSums  # winning rewards joined to holdout decisions
    feedback: dict[str, int] = field(default_factory=dict)  # rows by kind, every kind present

    @property
    def decisions(self) -> int:
        return sum(a.decisions for a in self.arms.values())

    @property
    def holdout_decisions(self) -> int:
        return sum(a.holdout_decisions for a in self.arms.values())


def report(engine: sa.Engine, experiment_id: int) -> Report:
    """Everything GetStats reads from the log, in one statement: a single statement sees one
    snapshot on SQLite and on PostgreSQL (whose READ COMMITTED re-snapshots per statement), so
    decision counts, reward sums and feedback counts agree with each other."""
    # Each branch yields (part, slot, holdout, kind, n, sum, sumsq); columns a branch lacks are
    # typed NULLs/zeros so PostgreSQL can type the UNION.
    null_int = sa.cast(sa.null(), sa.Integer)
    null_text = sa.cast(sa.null(), sa.Text)
    zero = sa.cast(sa.literal(0.0), sa.Double)
    holdout_int = sa.cast(decisions.c.holdout, sa.Integer)
    r = feedback.c.reward

    by_decision = (
        sa.select(
            sa.literal("d").label("part"),
            decisions.c.arm_slot,
            holdout_int,
            null_text,
            sa.func.count(),
            zero,
            zero,
        )
        .where(decisions.c.experiment_id == experiment_id)
        .group_by(decisions.c.arm_slot, decisions.c.holdout)
    )
    joined = feedback.join(
        decisions,
        sa.and_(
            decisions.c.experiment_id == feedback.c.experiment_id,
            decisions.c.event_id == feedback.c.event_id,
        ),
    )
    by_reward = (
        sa.select(
            sa.literal("r"),
            decisions.c.arm_slot,
            holdout_int,
            null_text,
            sa.func.count(),
            sa.func.sum(r),
            sa.func.sum(r * r),
        )
        .select_from(joined)
        .where(feedback.c.experiment_id == experiment_id, feedback.c.kind.in_(WINNING_KINDS))
        .group_by(decisions.c.arm_slot, decisions.c.holdout)
    )
    by_observation = (
        sa.select(
            sa.literal("o"),
            feedback.c.arm_slot,
            null_int,
            null_text,
            sa.func.count(),
            sa.func.sum(r),
            sa.func.sum(r * r),
        )
        .where(feedback.c.experiment_id == experiment_id, feedback.c.kind == "observation")
        .group_by(feedback.c.arm_slot)
    )
    by_kind = (
        sa.select(sa.literal("k"), null_int, null_int, feedback.c.kind, sa.func.count(), zero, zero)
        .where(feedback.c.experiment_id == experiment_id)
        .group_by(feedback.c.kind)
    )
    stmt = sa.union_all(by_decision, by_reward, by_observation, by_kind)

    dec: dict[int, list[int]] = {}
    sums: dict[int, RewardSums] = {}
    split = {0: RewardSums(), 1: RewardSums()}
    kinds: dict[str, int] = dict.fromkeys(FEEDBACK_KINDS, 0)
    with engine.connect() as conn:
        rows = conn.execute(stmt).all()
    for part, slot, hold, kind, n, s, s2 in rows:
        if part == "k":
            kinds[str(kind)] = int(n)
            continue
        if part == "d":
            d = dec.setdefault(int(slot), [0, 0])
            d[0] += int(n)
            d[1] += int(n) if hold else 0
            continue
        rs = RewardSums(int(n), float(s or 0.0), float(s2 or 0.0))
        sums[int(slot)] = sums.get(int(slot), RewardSums()) + rs
        if part == "r":
            split[1 if hold else 0] += rs
    arms = {}
    for slot in dec.keys() | sums.keys():
        n, h = dec.get(slot, (0, 0))
        arms[slot] = ArmSummary(n, h, sums.get(slot, RewardSums()))
    return Report(arms, split[0], split[1], kinds)
