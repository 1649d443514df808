"""Live experiments: build them from the log, rebuild their state, apply feedback batches.

Recovery = the newest checkpoint of the current revision + the recorded apply batches after
it, replayed in order through the same ``apply_batch`` the learner used, so the rebuilt state is
the state that was published (the same rows in the same buckets give the same floats).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np
from banditd import policies
from banditd.policies import Meta, State
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


def compile_policy(config: dict[str, Any], policy: policies.Policy, n_arms: int) -> None:
    """Run one select and one update on a throwaway state, so the experiment's first request
    does not pay for compiling them (done before an experiment is visible or health SERVING)."""
    fam = policies.get(config["family"])
    st = fresh_state(config, policy, max(n_arms, 1), 1, 0)
    cap = int(np.shape(st.meta.active)[0])
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
    train_holdout = rt.config["reward"]["train_on_holdout"]
    xs, arms, rewards, props = [], [], [], []
    for p in batch:
        fb = p.feedback
        if fb.kind == "observation":
            src_ctx, src_idx = fb.context, fb.sparse_indices
            slots, feats = fb.arm_feature_slots, fb.arm_features
            chosen, prop = fb.chosen[0], fb.propensity
        else:
            d = p.decision
            if d is None or d.revision != rt.revision or (d.holdout and not train_holdout):
                continue
            src_ctx, src_idx = d.context, d.sparse_indices
            slots, feats = d.arm_feature_slots, d.arm_features
            chosen, prop = d.chosen[0], d.propensity
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
    )


class Registry:
    """Every experiment this process serves, by (namespace, name) and by id."""

    def __init__(self, log_: EventLog) -> None:
        self.log = log_
        self._by_key: dict[tuple[str, str], Runtime] = {}
        self._by_id: dict[int, Runtime] = {}
        self._lock = threading.Lock()
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
            loaded = serialize.loads(
                ck.blob, family=config["family"], revision=exp.revision, types=(State, Meta)
            )
            st = loaded.state
            stats = {k: jnp.asarray(v) for k, v in st.stats.items()}
            meta = Meta(*(jnp.asarray(v) for v in st.meta))
            state = State(stats, meta, policy.kernels.refresh(policy.kernels.h, stats))
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
        self.fences[exp.id] = self.log.acquire_fence(exp.id)
        return rt

    def checkpoint(self, rt: Runtime) -> None:
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
