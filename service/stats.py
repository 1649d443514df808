"""GetStats: per-arm empirical statistics from the log, feedback counts, versions."""

from __future__ import annotations

import math

from banditd.store.eventlog import EventLog
from banditd.store.reports import ArmSummary, arm_summaries
from banditd.store.sql import SqlEventLog
from banditd.v1 import bandit_pb2 as pb

from .runtime import Runtime

Z95 = 1.959963984540054
EMPTY = ArmSummary(0, 0, 0, 0.0, 0.0)


def experiment_stats(rt: Runtime, log: EventLog) -> pb.GetStatsResponse:
    counts = log.counts(rt.exp.id)
    if not isinstance(log, SqlEventLog):
        raise TypeError("GetStats reads per-arm sums with SQL; the event log must be SqlEventLog")
    summaries = arm_summaries(log.engine, rt.exp.id)
    fb = counts.feedback
    resp = pb.GetStatsResponse(
        decisions=counts.decisions,
        revision=rt.revision,
        version=int(rt.state.meta.version),
        applied_watermark=rt.watermark,
        holdout_decisions=sum(s.holdout_decisions for s in summaries.values()),
        feedback=pb.FeedbackCounts(
            rewards=fb["reward"],
            defaults=fb["default"],
            duplicates=fb["duplicate"],
            late=fb["late"],
            orphans=fb["orphan"],
            observations=fb["observation"],
        ),
    )
    for a in rt.arms:
        s = summaries.get(a.slot) or EMPTY
        n = s.rewards
        mean = s.reward_sum / n if n else 0.0
        # 95% normal-approximation interval from the sample variance.
        var = max(s.reward_sumsq / n - mean * mean, 0.0) * n / (n - 1) if n > 1 else 0.0
        half = Z95 * math.sqrt(var / n) if n > 1 else 0.0
        resp.arms.add(
            arm_id=a.arm_id,
            active=a.active,
            decisions=s.decisions,
            rewards=n,
            mean_reward=mean,
            ci_low=mean - half,
            ci_high=mean + half,
        )
    return resp
