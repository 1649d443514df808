"""Classic non-contextual index policies: UCB1, epsilon-greedy, EXP3 (algorithms.md §8.1-8.3)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from .base import masked, segment_sum, tie_probs
from .family import Family, Hyper, no_cache, non_negative, positive, unit_interval, zeros_init
from .thompson import count_sum_delta


def ucb1_index(h, stats):
    n, s = stats["n"], stats["s"]
    total = jnp.sum(n)
    safe = jnp.maximum(n, 1e-300)
    bonus = h["alpha"] * jnp.sqrt(2.0 * jnp.log(jnp.maximum(total, 1.0)) / safe)
    return jnp.where(n > 0, s / safe + bonus, jnp.inf)  # unplayed arms first


def _ucb1_scores(cfg, h, state, ctx, keys, mask, t):
    idx = ucb1_index(h, state.stats)
    return jnp.broadcast_to(idx, mask.shape)


UCB1 = Family(
    name="ucb1",
    doc="UCB1 (Auer et al. 2002): mean + alpha*sqrt(2 ln t / n); unplayed arms first.",
    kind="argmax",
    contextual=False,
    reward_kinds=("binary", "bounded"),
    hypers={"alpha": Hyper(1.0, "bonus scale (1 = UCB1)", check=non_negative, rule=">= 0")},
    init_stats=zeros_init(("n", "s")),
    delta=count_sum_delta,
    refresh=no_cache,
    scores=_ucb1_scores,
)


def _greedy_dist(cfg, h, state, ctx, mask, t):
    n, s = state.stats["n"], state.stats["s"]
    means = jnp.where(n > 0, s / jnp.maximum(n, 1e-300), jnp.inf)  # unplayed arms come first
    scores = jnp.broadcast_to(means, mask.shape)
    greedy = tie_probs(scores, mask)
    n_elig = jnp.maximum(mask.sum(-1, keepdims=True), 1)
    eps = h["epsilon"]
    return jnp.where(mask, (1.0 - eps) * greedy + eps / n_elig, 0.0), scores


EPSILON_GREEDY = Family(
    name="epsilon_greedy",
    doc="epsilon-greedy on empirical means; unplayed arms come first; ties share the greedy mass.",
    kind="dist",
    contextual=False,
    hypers={
        "epsilon": Hyper(
            0.1,
            "exploration rate (MABWiser default 0.1)",
            check=unit_interval,
            rule="in [0, 1]",
            identity=False,
        ),
    },
    init_stats=zeros_init(("n", "s")),
    delta=count_sum_delta,
    refresh=no_cache,
    dist=_greedy_dist,
)


def _exp3_gamma(cfg, h, n_arms):
    if cfg["auto_alpha"]:
        k = jnp.maximum(n_arms, 2.0)
        return jnp.minimum(1.0, jnp.sqrt(k * jnp.log(k) / ((np.e - 1.0) * h["horizon"])))
    return h["alpha"]


def _exp3_dist(cfg, h, state, ctx, mask, t):
    logw = state.stats["logw"]
    n_elig = jnp.maximum(mask.sum(-1, keepdims=True), 1)
    # gamma depends on the number of active arms (as in the update), not on this row's eligible
    # set; the gamma mass is spread over the eligible arms.
    gamma = _exp3_gamma(cfg, h, jnp.maximum(jnp.sum(state.meta.active), 1).astype(logw.dtype))
    z = masked(jnp.broadcast_to(logw, mask.shape), mask)
    soft = jax.nn.softmax(z, axis=-1)  # log-sum-exp stable, subtracts the max
    probs = jnp.where(mask, (1.0 - gamma) * soft + gamma / n_elig, 0.0)
    return probs, jnp.broadcast_to(logw, mask.shape)


def _exp3_delta(cfg, h, state, ctx, arms, r, w, prop, t):
    # x_hat = x / p_j with the propensity logged at decision time keeps deltas mergeable.
    k = jnp.maximum(jnp.sum(state.meta.active), 1).astype(r.dtype)
    gamma = _exp3_gamma(cfg, h, k)
    n = state.meta.active.shape[0]
    return {"logw": segment_sum(w * gamma * (r / prop) / k, arms, n)}


EXP3 = Family(
    name="exp3",
    doc="EXP3 (Auer et al. 2002) for adversarial rewards in [0,1]; updates use the logged "
    "propensity (importance weighting), so it must be supplied.",
    kind="dist",
    contextual=False,
    needs_propensity=True,
    reward_kinds=("binary", "bounded"),
    hypers={
        "alpha": Hyper(
            None,
            "exploration mix gamma; None = theory value from horizon",
            check=lambda x: x is None or 0.0 < float(x) <= 1.0,
            rule="in (0, 1] or null",
        ),
        "horizon": Hyper(
            10000.0, "total-reward bound g for the automatic gamma", check=positive, rule="> 0"
        ),
        "auto_alpha": Hyper(True, "derived: alpha is None", static=True, identity=False),
    },
    init_stats=zeros_init(("logw",)),
    delta=_exp3_delta,
    refresh=no_cache,
    dist=_exp3_dist,
)

__all__ = ["UCB1", "EPSILON_GREEDY", "EXP3", "ucb1_index", "positive"]
