"""Live experiments: build them from the log, rebuild their state, apply feedback batches.

Recovery = the newest checkpoint of the current revision + the recorded apply batches after
it, replayed in order through the same ``apply_batch`` the learner used, so the rebuilt state is
the state that was published (the same rows in the same buckets give the same floats).
"""

from __future__ import annotations

import logging
import math
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import jax.numpy as jnp
import numpy as np
from banditd import policies
from banditd.policies import Meta, State
from banditd.policies.family import Family
from banditd.store import rows, serialize
from banditd.store.eventlog import EventLog
from banditd.store.packing import unpack_f64, unpack_i32

from . import faults
from .runtime import Runtime

log = logging.getLogger("banditd.registry")


def _at_version(state: State, version: int) -> State:
    return state._replace(meta=state.meta._replace(version=jnp.asarray(version, jnp.int64)))


def fresh_state(
    rt_config: dict[str, Any], policy: policies.Policy, n_slots: int, revision: int, version: int
) -> State:
    fam = policies.get(rt_config["family"])
    dim = rt_config["policy_dim"] if fam.contextual else None
    return _at_version(policy.init(n_slots, dim=dim, revision=revision), version)


def load_state(
    policy: policies.Policy,
    blob: bytes,
    family: str,
    revision: int,
    more_stats: dict[str, np.ndarray] | None = None,
) -> State:
    """A state from ``serialize.dumps`` bytes (a checkpoint, a published header), with
    ``more_stats`` (copied) added to its statistics and the cache rebuilt."""
    st: Any = serialize.loads(blob, family=family, revision=revision, types=(State, Meta)).state
    stats = {k: jnp.asarray(v) for k, v in st.stats.items()}
    stats.update({k: jnp.array(v) for k, v in (more_stats or {}).items()})
    meta = Meta(*(jnp.asarray(v) for v in st.meta))
    return State(stats, meta, policy.kernels.refresh(policy.kernels.h, stats))


def compile_policy(config: dict[str, Any], policy: policies.Policy, n_arms: int) -> None:
    """Run one select and one update on a throwaway state, so the experiment's first request
    does not pay for compiling them (done before an experiment is visible or health SERVING)."""
    fam = policies.get(config["family"])
    st = fresh_state(config, policy, max(n_arms, 1), 1, 0)
    cap = int(np.shape(st.meta.active)[0])
    if fam.ranked:
        k = max(1, int(config["slate_size"]))
        xr = np.zeros((1, cap, config["policy_dim"])) if fam.contextual else None
        policy.select(st, xr, np.zeros((1, 2), np.uint32), k=k)
        policy.update(st, xr, np.arange(k)[None, :], np.zeros((1, k)))
        return
    x = None
    if fam.contextual:
        d = config["policy_dim"]
        x = np.zeros((1, cap, d)) if config["arm_feature_dim"] else np.zeros((1, d))
    policy.select(st, x, np.zeros((1, 2), np.uint32))
    xu = None if x is None else np.zeros((1, config["policy_dim"]))
    policy.update(st, xu, np.zeros(1, np.int64), np.zeros(1), propensity=np.ones(1))


def sync_arms(policy: policies.Policy, state: State, arms: Sequence[rows.Arm]) -> State:
    """Grow the state to the logged slots and retire the retired ones."""
    n = int(state.meta.n_arms)
    if len(arms) > n:
        state = policy.add_arms(state, len(arms) - n)
    retired = [a.slot for a in arms if not a.active]
    active = np.asarray(state.meta.active)
    if any(active[s] for s in retired):
        state = policy.retire_arms(state, retired)
    return state


def _vector(rt: Runtime, values: bytes | None, indices: bytes | None) -> np.ndarray:
    if values is None:
        return np.zeros(rt.config["dim"])
    v = unpack_f64(values)
    if indices is None:
        return v
    out = np.zeros(rt.config["dim"])
    out[unpack_i32(indices)] = v
    return out


def _arm_vector(rt: Runtime, slot: int, slots: bytes | None, feats: bytes | None) -> np.ndarray:
    afd = rt.config["arm_feature_dim"]
    if slots is not None and feats is not None:
        s = unpack_i32(slots)
        hit = np.nonzero(s == slot)[0]
        if hit.size:
            return unpack_f64(feats).reshape(-1, afd)[hit[0]]
    return rt.static_features[slot]


def apply_batch(rt: Runtime, state: State, batch: Sequence[rows.Pending]) -> State:
    """The state after one learner batch; rows that must not train are consumed, not learned."""
    fam = policies.get(rt.config["family"])
    if fam.ranked:
        return _apply_ranked(rt, fam, state, batch)
    train_holdout = rt.config["reward"]["train_on_holdout"]
    xs, arms, rewards, props, times = [], [], [], [], []
    for p in batch:
        fb = p.feedback
        if fb.kind == "observation":
            src_ctx, src_idx = fb.context, fb.sparse_indices
            slots, feats = fb.arm_feature_slots, fb.arm_features
            chosen, prop = fb.chosen[0], fb.propensity
            when = fb.event_time if fb.event_time is not None else fb.committed_at
        else:
            d = p.decision
            if d is None or d.revision != rt.revision or (d.holdout and not train_holdout):
                continue
            src_ctx, src_idx = d.context, d.sparse_indices
            slots, feats = d.arm_feature_slots, d.arm_features
            chosen, prop = d.chosen[0], d.propensity
            when = d.created_at  # the pull's time: what time-decayed families discount by
        times.append(0.0 if when is None else when)
        if fam.contextual:
            x = _vector(rt, src_ctx, src_idx)
            if rt.config["arm_feature_dim"]:
                x = np.concatenate([x, _arm_vector(rt, chosen, slots, feats)])
            xs.append(x)
        arms.append(chosen)
        rewards.append(fb.reward)
        props.append(1.0 if prop is None else prop)
    if not arms:
        return _at_version(state, int(state.meta.version) + 1)
    return rt.policy.update(
        state,
        np.stack(xs) if fam.contextual else None,
        np.asarray(arms),
        np.asarray(rewards),
        propensity=np.asarray(props) if fam.needs_propensity else None,
        t=np.asarray(times) if fam.uses_time else None,
    )


# Ranked rows consumed without training because their logged data cannot be applied (a list
# or per-slot rewards the policy rejects), by experiment id; each batch with some is logged.
UNAPPLIABLE: Counter[int] = Counter()
# Per-item feature tensors [rows, capacity, d] of one ranked update call stay below this many
# floats: a learner batch of large lists over many arms is applied in consecutive chunks.
RANKED_CHUNK_FLOATS = 1 << 22


@dataclass(frozen=True)
class _RankedRow:
    chosen: tuple[int, ...]
    rewards: tuple[float, ...]
    items: np.ndarray | None  # [k, policy_dim]: the shown items' feature rows (linear families)


def _ranked_problem(
    fam: Family,
    chosen: tuple[int, ...],
    rewards: tuple[float, ...],
    used: int,
    positions: Any,
) -> str | None:
    """Why a logged list with its per-slot rewards cannot train ``fam``; None when it can."""
    if not chosen:
        return "no arms"
    if len(rewards) != len(chosen):
        return f"{len(rewards)} slot rewards for {len(chosen)} arms"
    if min(chosen) < 0 or max(chosen) >= used:
        return f"arm slot outside [0, {used})"
    if len(set(chosen)) != len(chosen):
        return "an arm repeats in the list"
    if positions is not None and len(chosen) > int(positions):
        return f"{len(chosen)} slots is more than the policy's {int(positions)} positions"
    if not all(math.isfinite(r) for r in rewards):
        return "a slot reward is not finite"
    if fam.reward_kinds == ("binary",) and any(r not in (0.0, 1.0) for r in rewards):
        return "a slot reward is not 0 or 1"
    return None


def _item_rows(
    rt: Runtime,
    chosen: tuple[int, ...],
    ctx: bytes | None,
    idx: bytes | None,
    slots: bytes | None,
    feats: bytes | None,
) -> np.ndarray:
    """[k, policy_dim]: the context followed by each shown item's features, as Select built them
    (``Runtime.policy_rows``: static features with the request's overrides)."""
    x = _vector(rt, ctx, idx)
    if x.shape != (rt.config["dim"],):
        raise ValueError(f"context has {x.shape[0]} values, expected {rt.config['dim']}")
    arm = np.stack([_arm_vector(rt, s, slots, feats) for s in chosen])
    out = np.concatenate([np.broadcast_to(x, (len(chosen), x.shape[0])), arm], axis=1)
    if out.shape[1] != rt.config["policy_dim"] or not np.isfinite(out).all():
        raise ValueError("item features do not match the experiment's feature schema")
    return out


def _apply_ranked(rt: Runtime, fam: Family, state: State, batch: Sequence[rows.Pending]) -> State:
    """Ranked families: [B, k] lists with per-slot rewards, one update call per list length
    (and per chunk of per-item features); the batch still counts as one version."""
    version = int(state.meta.version)
    reward_cfg = rt.config["reward"]
    used = int(state.meta.n_arms)
    positions = rt.policy.hyper.get("positions")
    groups: dict[int, list[_RankedRow]] = {}
    bad: list[str] = []
    for p in batch:
        fb = p.feedback
        if fb.kind == "observation":
            chosen = fb.chosen
            src = (fb.context, fb.sparse_indices, fb.arm_feature_slots, fb.arm_features)
        else:
            d = p.decision
            if (
                d is None
                or d.revision != rt.revision
                or (d.holdout and not reward_cfg["train_on_holdout"])
            ):
                continue
            chosen = d.chosen
            src = (d.context, d.sparse_indices, d.arm_feature_slots, d.arm_features)
        rewards = fb.slot_rewards
        if not rewards and fb.kind == "default":
            # A window closed without feedback: the default applies to every slot (for a
            # cascade, a default 0 is "no click": every slot examined and skipped).
            rewards = (float(fb.reward),) * len(chosen)
        why = _ranked_problem(fam, chosen, rewards, used, positions)
        items = None
        if why is None and fam.contextual:
            try:
                items = _item_rows(rt, chosen, *src)
            except (ValueError, IndexError) as e:
                why = f"item features: {e}"
        if why is not None:
            bad.append(f"seq {fb.seq}: {why}")
            continue
        groups.setdefault(len(chosen), []).append(_RankedRow(chosen, rewards, items))
    cap = int(np.shape(state.meta.active)[0])
    dim = int(rt.config["policy_dim"])
    step = len(batch) or 1
    if fam.contextual:
        fit = max(1, RANKED_CHUNK_FLOATS // max(cap * dim, 1))
        step = 1 << (fit.bit_length() - 1)  # a power of two: the policy pads rows to one anyway
    for k in sorted(groups):
        group = groups[k]
        for start in range(0, len(group), step):
            part = group[start : start + step]
            arms = np.asarray([r.chosen for r in part], dtype=np.int64)
            x = None
            if fam.contextual:
                x = np.zeros((len(part), cap, dim))
                for b, r in enumerate(part):
                    x[b, list(r.chosen)] = r.items
            try:
                state = rt.policy.update(
                    state, x, arms, np.asarray([r.rewards for r in part], dtype=np.float64)
                )
            except ValueError as e:  # checked above; never let one bad chunk stop the learner
                bad.extend(f"update of {len(part)} lists of {k}: {e}" for _ in part)
    if bad:
        UNAPPLIABLE[rt.exp.id] += len(bad)
        log.warning(
            "%s: %d feedback rows consumed without training (first: %s)", rt.key, len(bad), bad[0]
        )
    return _at_version(state, version + 1)


class Registry:
    """Every experiment this process serves, by (namespace, name) and by id."""

    def __init__(self, log_: EventLog, *, acquire_fences: bool = True) -> None:
        self.log = log_
        self._by_key: dict[tuple[str, str], Runtime] = {}
        self._by_id: dict[int, Runtime] = {}
        self._lock = threading.Lock()
        # Embedded: this process is every experiment's learner, so it takes the fences at load.
        # Production: only a replica holding an experiment's lease takes its fence (on takeover),
        # since taking one deposes the current learner.
        self.acquire_fences = acquire_fences
        self.fences: dict[int, int] = {}

    def get(self, namespace: str, name: str) -> Runtime | None:
        return self._by_key.get((namespace, name))

    def by_id(self, experiment_id: int) -> Runtime | None:
        return self._by_id.get(experiment_id)

    def all(self) -> list[Runtime]:
        return list(self._by_id.values())

    def put(self, rt: Runtime) -> None:
        with self._lock:
            self._by_key[(rt.exp.namespace, rt.exp.name)] = rt
            self._by_id[rt.exp.id] = rt

    def load_all(self) -> int:
        for exp in self.log.list_experiments():
            self.put(self.build(exp))
        return len(self._by_id)

    def build(self, exp: rows.Experiment) -> Runtime:
        """A runtime for ``exp`` with its state rebuilt from checkpoint + recorded batches."""
        config = dict(exp.config)
        policy = policies.make(config["family"], **config["hyperparameters"])
        arms = self.log.list_arms(exp.id)
        ck = self.log.latest_checkpoint(exp.id, revision=exp.revision)
        if ck is not None:
            state = load_state(policy, ck.blob, config["family"], exp.revision)
            version = ck.version
        else:
            version = 0
            state = fresh_state(config, policy, len(arms), exp.revision, 0)
        state = sync_arms(policy, state, arms)
        rt = Runtime(exp=exp, config=config, policy=policy, state=state, arms=arms)
        replayed = 0
        for batch in self.log.applied_batches_after(exp.id, version):
            rt.state = apply_batch(rt, rt.state, batch.rows)
            rt.state = _at_version(rt.state, batch.record.version_to)
            rt.watermark = max([rt.watermark, *(p.feedback.seq or 0 for p in batch.rows)])
            replayed += 1
        if replayed:
            log.info("%s: state rebuilt from version %d + %d batches", rt.key, version, replayed)
        if self.acquire_fences:
            self.fences[exp.id] = self.log.acquire_fence(exp.id)
        return rt

    def rebuild(self, rt: Runtime) -> None:
        """Replace ``rt``'s state with the log's (checkpoint + recorded batches): a replica
        taking over an experiment's learning starts from what was recorded, not from its own
        possibly older snapshot."""
        exp = self.log.get_experiment_by_id(rt.exp.id) or rt.exp
        fresh = self.build(exp)
        with rt.lock:
            # The experiment itself too: another replica may have added arms or a revision.
            rt.exp, rt.config, rt.policy, rt.arms = (
                fresh.exp,
                fresh.config,
                fresh.policy,
                fresh.arms,
            )
            rt.state, rt.watermark = fresh.state, max(rt.watermark, fresh.watermark)
            rt.reindex()

    def checkpoint(self, rt: Runtime) -> None:
        if rt.exp.id not in self.fences:
            # Production, a replica that does not learn this experiment (a new revision made
            # here): the fence deposes the learner, which takes a newer one and rebuilds.
            self.fences[rt.exp.id] = self.log.acquire_fence(rt.exp.id)
        st = rt.state
        faults.hit("mid_checkpoint")
        blob = serialize.dumps(
            st._replace(cache={}),
            family=rt.config["family"],
            revision=rt.revision,
            version=int(st.meta.version),
            capacity=rt.capacity,
        )
        self.log.save_checkpoint(
            rt.exp.id,
            revision=rt.revision,
            version=int(st.meta.version),
            blob=blob,
            fence=self.fences[rt.exp.id],
        )
