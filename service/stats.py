"""GetStats: per-arm empirical statistics from the log, the model's view of the arms (interval,
P(best), regret), policy-vs-holdout lift, feedback counts and versions."""

from __future__ import annotations

import hashlib
import math
import threading
from collections import OrderedDict
from typing import Any

import numpy as np
import sqlalchemy as sa
from banditd import policies
from banditd.policies.elimination import identified
from banditd.store.eventlog import EventLog
from banditd.store.packing import unpack_f64_tuple, unpack_i32_tuple
from banditd.store.reports import ArmSummary, RewardSums, report
from banditd.store.rows import WINNING_KINDS
from banditd.store.schema import decisions, feedback
from banditd.store.sql import SqlEventLog
from banditd.v1 import bandit_pb2 as pb

from . import posterior
from .posterior import BAYESIAN, NOT_CONTEXTUAL, Z95
from .runtime import Runtime

# Families that settle on one arm (GetStatsResponse.identified).
IDENTIFYING = ("successive_elimination", "sequential_halving")

EMPTY = ArmSummary()
SEED_TAG = 0x57A75  # keeps these draws apart from any other stream seeded by experiment id


class _ModelCache:
    """Model summaries by a digest of everything they depend on. Dashboards and wait loops poll
    GetStats far more often than the state or the log move, and P(best) costs ~10^5 draws."""

    def __init__(self, size: int = 256) -> None:
        self._items: OrderedDict[bytes, _Summary] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def get(self, key: bytes) -> _Summary | None:
        with self._lock:
            hit = self._items.get(key)
            if hit is not None:
                self._items.move_to_end(key)
            return hit

    def put(self, key: bytes, value: _Summary) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self._size:
                self._items.popitem(last=False)


class _Summary:
    __slots__ = ("model", "prob_best", "draws")

    def __init__(self, model: posterior.Model, prob_best: np.ndarray, draws: int) -> None:
        self.model, self.prob_best, self.draws = model, prob_best, draws


_CACHE = _ModelCache()


def ranked_arms(engine: sa.Engine, experiment_id: int, observe: str) -> dict[int, ArmSummary]:
    """Per-arm sums of a ranked experiment: ``decisions`` counts the lists an arm was shown in
    (impressions), ``rewards`` its observed slots (for cascades, the slots up to and including
    the first click; otherwise every slot) with their per-slot values, so the mean is the arm's
    click (reward) rate when examined. Winning rewards use their slot values, defaults apply
    their value to every slot, observations their own lists. Rows are grouped by list and
    values in SQL first: a log repeats few distinct lists, so Python sees those only."""
    null_f = sa.cast(sa.null(), sa.Double)
    by_list = (
        sa.select(decisions.c.chosen, sa.cast(decisions.c.holdout, sa.Integer), sa.func.count())
        .where(decisions.c.experiment_id == experiment_id)
        .group_by(decisions.c.chosen, decisions.c.holdout)
    )
    joined = feedback.join(
        decisions,
        sa.and_(
            decisions.c.experiment_id == feedback.c.experiment_id,
            decisions.c.event_id == feedback.c.event_id,
        ),
    )
    # only defaults carry no slot values; their one value counts for every slot
    fill = sa.case((feedback.c.slot_rewards.is_(None), feedback.c.reward), else_=null_f)
    by_reward = (
        sa.select(decisions.c.chosen, feedback.c.slot_rewards, fill, sa.func.count())
        .select_from(joined)
        .where(feedback.c.experiment_id == experiment_id, feedback.c.kind.in_(WINNING_KINDS))
        .group_by(decisions.c.chosen, feedback.c.slot_rewards, fill)
    )
    by_observation = (
        sa.select(feedback.c.chosen, feedback.c.slot_rewards, null_f, sa.func.count())
        .where(feedback.c.experiment_id == experiment_id, feedback.c.kind == "observation")
        .group_by(feedback.c.chosen, feedback.c.slot_rewards)
    )
    shown: dict[int, list[int]] = {}
    sums: dict[int, list[float]] = {}
    with engine.connect() as conn:  # one transaction: SQLite reads one snapshot
        lists = conn.execute(by_list).all()
        rewarded = [*conn.execute(by_reward).all(), *conn.execute(by_observation).all()]
    for chosen, hold, n in lists:
        for slot in unpack_i32_tuple(bytes(chosen)):
            c = shown.setdefault(slot, [0, 0])
            c[0] += int(n)
            c[1] += int(n) if hold else 0
    for chosen, slot_rewards, default, n in rewarded:
        if chosen is None:
            continue
        arms = unpack_i32_tuple(bytes(chosen))
        if slot_rewards is not None:
            values = unpack_f64_tuple(bytes(slot_rewards))
        elif default is not None:
            values = (float(default),) * len(arms)
        else:
            continue
        if len(values) != len(arms):
            continue  # not applied by the learner either
        for slot, v in zip(arms, values, strict=True):
            t = sums.setdefault(slot, [0, 0.0, 0.0])
            t[0] += int(n)
            t[1] += int(n) * v
            t[2] += int(n) * v * v
            if observe == "cascade" and v > 0:
                break  # the user stopped at the first click: later slots were not examined
    out = {}
    for slot in shown.keys() | sums.keys():
        d, h = shown.get(slot, (0, 0))
        n, total, sumsq = sums.get(slot, (0, 0.0, 0.0))
        out[slot] = ArmSummary(d, h, RewardSums(int(n), float(total), float(sumsq)))
    return out


def _model_summary(rt: Runtime, state: policies.State, arm_sums: dict[int, ArmSummary]) -> _Summary:
    family = rt.config["family"]
    version = int(state.meta.version)
    slots = np.asarray([a.slot for a in rt.arms], dtype=np.int64)
    active = np.asarray([a.active for a in rt.arms], dtype=bool)
    sums = [(arm_sums.get(int(s)) or EMPTY).rewards for s in slots]
    n = np.asarray([r.n for r in sums], dtype=np.float64)
    total = np.asarray([r.total for r in sums])
    sumsq = np.asarray([r.sumsq for r in sums])
    bayesian = family in BAYESIAN
    if bayesian:
        # Stats of a revision cover its slots only; arms added since have no state row yet.
        cap = int(np.shape(state.meta.active)[0])
        inside = slots < cap
        stats = {}
        for k, v in state.stats.items():
            arr = np.zeros(slots.size)
            arr[inside] = np.asarray(v, dtype=np.float64)[slots[inside]]
            stats[k] = arr
        inputs = [stats[k] for k in sorted(stats)]
    else:
        stats, inputs = {}, [n, total, sumsq]
    seed = [SEED_TAG, rt.exp.id, rt.revision, version]
    h = hashlib.blake2b(digest_size=20)
    h.update(repr((family, sorted(rt.policy.hyper.items()), seed)).encode())
    for arr in (slots, active, *inputs):
        h.update(np.ascontiguousarray(arr).tobytes())
    key = h.digest()
    hit = _CACHE.get(key)
    if hit is not None:
        return hit
    model = posterior.family_model(family, rt.policy.hyper, stats, n, total, sumsq)
    contenders = active & np.isfinite(model.low)
    draws = posterior.draws_for(int(contenders.sum())) if contenders.any() else 0
    pbest = posterior.prob_best(model.draw, contenders, draws, seed)
    out = _Summary(model, pbest, draws)
    _CACHE.put(key, out)
    return out


def _opt(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def experiment_stats(rt: Runtime, log: EventLog) -> pb.GetStatsResponse:
    if not isinstance(log, SqlEventLog):
        raise TypeError("GetStats reads per-arm sums with SQL; the event log must be SqlEventLog")
    rep = report(log.engine, rt.exp.id)
    state = rt.state  # one published snapshot; the learner replaces it whole
    fb = rep.feedback
    resp = pb.GetStatsResponse(
        decisions=rep.decisions,
        revision=rt.revision,
        version=int(state.meta.version),
        applied_watermark=rt.watermark,
        holdout_decisions=rep.holdout_decisions,
        feedback=pb.FeedbackCounts(
            rewards=fb["reward"],
            defaults=fb["default"],
            duplicates=fb["duplicate"],
            late=fb["late"],
            orphans=fb["orphan"],
            observations=fb["observation"],
        ),
    )
    fam = policies.get(rt.config["family"])
    # Ranked families: per-arm impressions and per-slot rewards, not the first slot's decisions.
    arm_sums = ranked_arms(log.engine, rt.exp.id, fam.observe) if fam.ranked else rep.arms
    summary = None if fam.contextual else _model_summary(rt, state, arm_sums)
    for j, a in enumerate(rt.arms):
        s = arm_sums.get(a.slot) or EMPTY
        n = s.rewards.n
        mean = s.rewards.total / n if n else 0.0
        # 95% normal-approximation interval from the sample variance.
        var = max(s.rewards.sumsq / n - mean * mean, 0.0) * n / (n - 1) if n > 1 else 0.0
        half = Z95 * math.sqrt(var / n) if n > 1 else 0.0
        arm = resp.arms.add(
            arm_id=a.arm_id,
            active=a.active,
            decisions=s.decisions,
            holdout_decisions=s.holdout_decisions,
            rewards=n,
            mean_reward=mean,
            ci_low=mean - half,
            ci_high=mean + half,
        )
        if summary is not None:
            m = summary.model
            for name, value in (
                ("model_mean", m.mean[j]),
                ("model_low", m.low[j]),
                ("model_high", m.high[j]),
                ("prob_best", summary.prob_best[j]),
            ):
                v = _opt(value)
                if v is not None:
                    setattr(arm, name, v)
    if summary is None:
        resp.model_method = resp.prob_best_method = NOT_CONTEXTUAL
    else:
        resp.model_method = summary.model.method
        if fam.ranked:
            resp.model_method = (
                "ranked family, per arm over its observed slots (decisions = lists shown in, "
                f"rewards = observed slots): {summary.model.method}"
            )
        resp.prob_best_draws = summary.draws
        resp.prob_best_method = (
            f"Monte Carlo: {summary.draws} draws from {summary.model.sampling}, seeded from "
            "(experiment, revision, version)"
            if summary.draws
            else "no contending arm (active with a model interval)"
        )
        played = np.asarray([a.decisions - a.holdout_decisions for a in resp.arms], np.float64)
        # One arm's regret per decision; a list's regret is not defined by per-arm means alone.
        regret = (
            None
            if fam.ranked
            else posterior.plug_in_regret(
                played, summary.model.mean, np.asarray([a.active for a in rt.arms], dtype=bool)
            )
        )
        if regret is not None:
            resp.regret = regret
    found = _identification(rt, state)
    if found is not None:
        resp.identified.CopyFrom(found)
    lift = posterior.welch_lift(
        (rep.policy.n, rep.policy.total, rep.policy.sumsq),
        (rep.holdout.n, rep.holdout.total, rep.holdout.sumsq),
    )
    if lift is not None:
        resp.lift.CopyFrom(
            pb.HoldoutLift(
                policy_rewards=lift.policy_n,
                policy_mean=lift.policy_mean,
                holdout_rewards=lift.holdout_n,
                holdout_mean=lift.holdout_mean,
                lift=lift.lift,
                ci_low=lift.low,
                ci_high=lift.high,
            )
        )
    return resp


def _identification(rt: Runtime, state: Any) -> pb.Identification | None:
    """The arm a best-arm identification family has settled on, if it has."""
    family = rt.config["family"]
    if family not in IDENTIFYING:
        return None
    slot, confidence = identified(family, rt.policy.hyper, state)
    arm = next((a for a in rt.arms if a.slot == slot), None)
    if arm is None:
        return None
    out = pb.Identification(arm_id=arm.arm_id)
    if family == "successive_elimination":
        out.confidence = confidence
        out.method = (
            f"successive elimination: the last arm left, delta = {rt.policy.hyper['delta']:g}"
        )
    else:
        out.method = (
            f"sequential halving: the survivor of a budget of {rt.policy.hyper['budget']:g} "
            "observations (fixed budget: no confidence bound)"
        )
    return out
