"""Simulated experiments: T rounds as one ``jax.lax.scan``, vmapped over seeds, compiled once.

Round ``t`` of seed ``s`` uses ``split(fold_in(PRNGKey(s), t), 3)`` as (observe, policy, reward)
keys. The observation and reward keys do not depend on what any policy chose, so every policy run
with the same seeds -- and ``realize``, which replays them for numpy libraries -- faces exactly the
same contexts and reward draws (common random numbers: paired comparisons have low variance).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from banditd.policies import Policy, get
from banditd.policies.ranked import observed_mask

from .env import Array, Env, RankedEnv


class Run(NamedTuple):
    regret: np.ndarray  # float[S, T]: cumulative pseudo-regret, sum of max_a means - means[arm]
    reward: np.ndarray  # float[S, T]: cumulative realized reward
    arms: np.ndarray  # int[S, T] chosen arm per round (int[S, T, k] lists on slate environments)
    # float[S, T]: logged propensity of the choice, the whole list's on slate environments (NaN
    # if not computed)
    propensity: np.ndarray
    compile_seconds: float  # lowering + compilation (a persistent-cache hit makes it small)
    run_seconds: float  # the compiled program alone, all seeds and rounds

    @property
    def us_per_decision(self) -> float:
        s, t = self.arms.shape
        return self.run_seconds / (s * t) * 1e6


def round_keys(key: Array, t: Array) -> Array:
    """The (observe, policy, reward) keys of round ``t``: [3, 2] uint32."""
    return jax.random.split(jax.random.fold_in(key, t), 3)


def seed_keys(seeds: Sequence[int]) -> Array:
    s = [int(x) for x in seeds]
    if not s:
        raise ValueError("seeds: need at least one seed")
    return jnp.stack([jax.random.PRNGKey(x) for x in s])


# --- agents: how a run chooses and learns ------------------------------------------------------


@dataclass(frozen=True)
class _Agent:
    """Static description of the chooser; hashable, so it keys the compiled program."""

    choose: Callable | None  # policy kernels.choose, or None for uniform random
    select: Any  # kernels.select, or None for uniform random
    update: Callable | None
    context: str  # "none" (non-contextual policy), "shared" ([1, d]) or "per_arm" ([1, N, d])
    mc_free: bool  # sampled family whose propensity is not needed: skip computing it
    ranked: int = 0  # list length k for ranked families (slate environments); 0 = one arm
    observe: str = "all"  # ranked feedback: "cascade" leaves slots after the first click unseen
    exact_props: bool = True  # ranked: the kernel's per-slot propensities are the final ones


def _batch_context(agent: _Agent, ctx: Array, cap: int, n: int) -> Array:
    if agent.context == "none":
        return jnp.zeros((1, 0))
    if agent.context == "shared":
        return ctx[None, :]
    # Capacity slots beyond the environment's arms are inactive; their zero rows never score.
    return jnp.zeros((1, cap, ctx.shape[-1]), ctx.dtype).at[0, :n].set(ctx)


def _act(agent: _Agent, h, state, n: int, ctx, key, t, eps):
    if agent.choose is None:
        arm = jax.random.randint(key, (), 0, n)
        return arm, jnp.asarray(1.0 / n)
    cap = state.meta.active.shape[0]
    elig = (jnp.arange(cap) < n)[None, :]
    c = _batch_context(agent, ctx, cap, n)
    tt = jnp.full((1,), t, jnp.float64)
    if agent.mc_free:
        # A given base distribution stops select from integrating choice probabilities that
        # no part of the simulation reads (LinTS quadrature/Monte Carlo costs more than the choice).
        base = jnp.full((1, cap), jnp.nan)
        arms, prop, _, _ = agent.select(h, state, c, key[None], elig, eps, tt, base)
    else:
        arms, prop = agent.choose(h, state, c, key[None], elig, eps, tt)
    return arms[0], prop[0]


def _learn(agent: _Agent, h, state, ctx, arm, r, prop, t):
    if agent.update is None:
        return state
    if agent.context == "none":
        x = jnp.zeros((1, 0))
    elif agent.context == "shared":
        x = ctx[None, :]
    else:
        x = ctx[arm][None, :]  # per-arm features: the played arm's row is what was observed
    p = jnp.where(jnp.isfinite(prop) & (prop > 0), prop, 1.0)
    tt = jnp.full((1,), t, jnp.float64)
    one = jnp.ones((1,))
    return agent.update(h, state, x, arm[None], r[None], one, p[None], tt)


def _act_ranked(agent: _Agent, h, state, n: int, ctx, key, t, eps):
    k = agent.ranked
    if agent.select is None:  # uniform random ordered k-subset
        return jax.random.permutation(key, n)[:k], jnp.asarray(1.0)
    cap = state.meta.active.shape[0]
    elig = (jnp.arange(cap) < n)[None, :]
    c = _batch_context(agent, ctx, cap, n)
    tt = jnp.full((1,), t, jnp.float64)
    arms, prop, _, _ = agent.select(h, state, c, key[None], elig, eps, tt)
    # Thompson families finish their list probabilities on the host: none are logged here.
    p = jnp.prod(prop[0]) if agent.exact_props else jnp.asarray(jnp.nan)
    return arms[0], p


def _learn_ranked(agent: _Agent, h, state, ctx, arms, r, t):
    if agent.update is None:
        return state
    x = jnp.zeros((1, 0)) if agent.context == "none" else ctx[arms][None]
    w = observed_mask(agent.observe, r)
    tt = jnp.full((1,), t, jnp.float64)
    return agent.update(h, state, x, arms[None], r[None], w[None], jnp.ones((1,)), tt)


_PROGRAMS: dict[tuple[_Agent, int], Any] = {}


def _program(agent: _Agent, T: int):
    key = (agent, T)
    if key in _PROGRAMS:
        return _PROGRAMS[key]
    if agent.ranked:
        return _program_ranked(agent, T)

    def one_seed(h, state0, env: Env, seed_key, eps):
        n = env.n_arms

        def body(state, t):
            k_obs, k_pol, k_rew = round_keys(seed_key, t)
            ctx, means = env.observe(k_obs, t)
            arm, prop = _act(agent, h, state, n, ctx, k_pol, t, eps)
            r = env.reward(k_rew, means, arm)
            state = _learn(agent, h, state, ctx, arm, r, prop, t)
            return state, (arm, r, jnp.max(means) - means[arm], prop)

        _, (arms, r, gap, prop) = jax.lax.scan(body, state0, jnp.arange(T))
        return jnp.cumsum(gap), jnp.cumsum(r), arms, prop

    prog = jax.jit(jax.vmap(one_seed, in_axes=(None, None, None, 0, None)))
    _PROGRAMS[key] = prog
    return prog


def _program_ranked(agent: _Agent, T: int):
    def one_seed(h, state0, env, seed_key, eps):
        n = env.n_arms

        def body(state, t):
            k_obs, k_pol, k_rew = round_keys(seed_key, t)
            ctx, means = env.observe(k_obs, t)
            arms, prop = _act_ranked(agent, h, state, n, ctx, k_pol, t, eps)
            r = env.slate_rewards(k_rew, means, arms)
            state = _learn_ranked(agent, h, state, ctx, arms, r, t)
            gap = env.best_value(means) - env.slate_value(means, arms)
            return state, (arms, r.sum(), gap, prop)

        _, (arms, r, gap, prop) = jax.lax.scan(body, state0, jnp.arange(T))
        return jnp.cumsum(gap), jnp.cumsum(r), arms, prop

    prog = jax.jit(jax.vmap(one_seed, in_axes=(None, None, None, 0, None)))
    _PROGRAMS[(agent, T)] = prog
    return prog


def _execute(
    agent: _Agent, h, state0, env: Env | RankedEnv, T: int, seeds: Sequence[int], eps: float
) -> Run:
    if int(T) < 1:
        raise ValueError(f"T: must be >= 1, got {T}")
    keys = seed_keys(seeds)
    args = (h, state0, env, keys, jnp.float64(eps))
    t0 = time.perf_counter()
    compiled = _program(agent, int(T)).lower(*args).compile()
    t1 = time.perf_counter()
    out = jax.block_until_ready(compiled(*args))
    t2 = time.perf_counter()
    regret, reward, arms, prop = (np.asarray(o) for o in out)
    return Run(regret, reward, arms, prop, t1 - t0, t2 - t1)


def _slots(env: Env | RankedEnv) -> int:
    if not isinstance(env, RankedEnv):
        raise ValueError(f"env: {env.name!r} is not a slate environment")
    return int(env.slots)


# --- public entry points -----------------------------------------------------------------------


def run(
    policy: Policy,
    env: Env | RankedEnv,
    T: int,
    seeds: Sequence[int],
    *,
    epsilon: float = 0.0,
    propensities: bool = False,
) -> Run:
    """Run ``policy`` for ``T`` rounds on ``env`` once per seed (all seeds in one compiled scan).

    ``epsilon`` is select's runtime exploration floor. Index and closed-form families log their
    propensity every round. ``propensities=True`` also integrates LinTS's choice probability in
    the kernel each round (quadrature or Monte Carlo: it costs more than the choice); the
    non-contextual Thompson families estimate theirs on the host, per state version, so a run
    logs NaN for them. Families that learn from the propensity (EXP3) always get it from
    ``kernels.choose``.
    """
    fam = get(policy.family)
    ranked_env = bool(getattr(env, "ranked", False))
    if fam.ranked != ranked_env:
        kind = "a slate (ranked) environment" if fam.ranked else "a single-arm environment"
        raise ValueError(f"env: family {fam.name!r} needs {kind}; {env.name!r} is not one")
    if not 0.0 <= float(epsilon) <= 1.0:
        raise ValueError(f"epsilon: must be in [0, 1], got {epsilon}")
    if env.reward_kind not in fam.reward_kinds:
        raise ValueError(
            f"env: {env.name!r} pays {env.reward_kind} rewards; {fam.name!r} takes "
            f"{', '.join(fam.reward_kinds)}"
        )
    shared = bool(policy.hyper.get("shared", False))
    if fam.contextual:
        if env.dim < 1:
            raise ValueError(f"env: {fam.name!r} is contextual; {env.name!r} has no context")
        if shared and not env.per_arm:
            raise ValueError(f"env: shared={shared} needs per-arm features; {env.name!r} has none")
        context = "per_arm" if env.per_arm else "shared"
    else:
        context = "none"
    k = policy.kernels
    if fam.ranked:
        agent = _Agent(
            choose=None,
            select=k.rank(_slots(env)),
            update=k.update,
            context=context,
            mc_free=False,
            ranked=_slots(env),
            observe=fam.observe,
            exact_props=fam.kind == "argmax",
        )
        state0 = policy.init(env.n_arms, env.dim if fam.contextual else None)
        return _execute(agent, k.h, state0, env, T, seeds, epsilon)
    agent = _Agent(
        choose=k.choose,
        select=k.select,
        update=k.update,
        context=context,
        mc_free=fam.kind == "sampled" and not propensities and not fam.needs_propensity,
    )
    state0 = policy.init(env.n_arms, env.dim if fam.contextual else None)
    return _execute(agent, k.h, state0, env, T, seeds, epsilon)


def uniform(env: Env | RankedEnv, T: int, seeds: Sequence[int]) -> Run:
    """The uniform-random baseline on the same rounds as ``run`` with the same seeds (a random
    ordered list of ``env.slots`` items on slate environments)."""
    k = _slots(env) if getattr(env, "ranked", False) else 0
    agent = _Agent(choose=None, select=None, update=None, context="none", mc_free=False, ranked=k)
    return _execute(agent, {}, jnp.zeros(()), env, T, seeds, 0.0)


class Realization(NamedTuple):
    contexts: np.ndarray  # [T, *context shape]
    means: np.ndarray  # [T, N]
    rewards: np.ndarray  # [T, N]: what each arm would have paid in that round


def realize(env: Env, T: int, seed: int) -> Realization:
    """The rounds ``run`` shows with this seed, as numpy arrays (for numpy baselines)."""
    return Realization(*(np.asarray(a) for a in _realize(env, seed_keys([seed])[0], int(T))))


@jax.jit
def _realize_rounds(env: Env, key: Array, ts: Array):
    def one(t):
        k_obs, _, k_rew = round_keys(key, t)
        ctx, means = env.observe(k_obs, t)
        rewards = jax.vmap(lambda a: env.reward(k_rew, means, a))(jnp.arange(env.n_arms))
        return ctx, means, rewards

    return jax.vmap(one)(ts)


def _realize(env: Env, key: Array, T: int):
    if T < 1:
        raise ValueError(f"T: must be >= 1, got {T}")
    return _realize_rounds(env, key, jnp.arange(T))
