"""Ranked decisions (cascades, slates): a list of k distinct items per row.

Every ranked family shares one select rule and one propensity convention:
  * With probability ``1 - eps`` the list is the family's greedy list: the top k by score (the
    UCB index, or one posterior draw for Thompson families; exact ties in random order) or the
    family's own ``rank`` rule (in-slate TS). With probability ``eps`` it is a uniformly random
    ordered k-subset of the eligible items. Exploring whole lists, rather than slot by slot,
    keeps every list's probability at least eps * (E-k)!/E!.
  * ``propensity[b, j]`` is P(a_j | a_<j) for the list actually shown, so the product over slots
    is the list's probability: (1-eps) * P_greedy(list) + eps * P_uniform(list), taken as a
    ratio of prefix probabilities. Index families compute P_greedy in the kernel (ties share
    mass); Thompson families get it from a host model built once per (state, eligible set).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .base import key_uniform, mix_epsilon, tie_probs

Array = Any
TIEBREAK_SALT = 0x7A1E  # separates the tie-break stream from the draws made with the row key


def tiebreak(keys: Array, n: int) -> Array:
    """One uniform per item and row: the random order among equal scores (and of exploration)."""
    return jax.vmap(lambda k: jax.random.uniform(jax.random.fold_in(k, TIEBREAK_SALT), (n,)))(keys)


def top_k(scores: Array, mask: Array, noise: Array, k: int) -> Array:
    """The k eligible items with the highest scores, best first; equal scores in ``noise`` order.

    ``+inf`` scores (unexamined items) come first, in random order, as algorithms.md §5.2 asks.
    k rounds of (max, then the noisiest of the items at the max): XLA's CPU ``top_k`` sorts the
    whole row and costs ~40x more for k = 5 of 1,000.
    """
    s = jnp.where(mask, scores, -jnp.inf)
    taken = ~mask
    out = []
    for _ in range(k):
        s_left = jnp.where(taken, -jnp.inf, s)
        best = jnp.max(s_left, axis=-1, keepdims=True)
        at_best = (s_left == best) & ~taken
        pick = jnp.argmax(jnp.where(at_best, noise, -1.0), axis=-1)
        out.append(pick)
        taken = taken | (jnp.arange(s.shape[-1])[None, :] == pick[:, None])
    return jnp.stack(out, axis=1)


def uniform_list(mask: Array, noise: Array, k: int) -> Array:
    """A uniformly random ordered k-subset of the eligible items: the k noisiest, in order."""
    return top_k(jnp.zeros(noise.shape, noise.dtype), mask, noise, k)


def uniform_prefix(mask: Array, k: int) -> Array:
    """P_uniform(a_1..a_j) for j = 1..k: prod_{i<j} 1 / (E - i) (jnp or numpy masks)."""
    xp = jnp if isinstance(mask, jax.Array) else np
    e = mask.sum(-1).astype(xp.float64)[:, None]
    return xp.cumprod(1.0 / xp.maximum(e - xp.arange(k)[None, :], 1.0), axis=1)


def greedy_prefix(scores: Array, mask: Array, arms: Array) -> Array:
    """P_greedy(a_1..a_j) of a deterministic index with random tie order, j = 1..k.

    Slot j picks uniformly among the remaining items that share the highest score, so the list
    has probability prod_j 1{a_j is a top item of the rest} / #ties_j.
    """
    n = scores.shape[-1]
    s = jnp.where(mask, scores, -jnp.inf)
    hot = arms[:, :, None] == jnp.arange(n)[None, None, :]  # [B, k, N]
    before = jnp.cumsum(hot, axis=1) - hot  # items shown in earlier slots
    rest = mask[:, None, :] & (before == 0)
    s_rest = jnp.where(rest, s[:, None, :], -jnp.inf)
    top = jnp.max(s_rest, axis=-1)  # [B, k]
    ties = jnp.sum(rest & (s[:, None, :] == top[..., None]), axis=-1)
    chosen = jnp.take_along_axis(s, arms, axis=1)
    step = jnp.where(chosen == top, 1.0 / jnp.maximum(ties, 1), 0.0)
    return jnp.cumprod(step, axis=1)


def conditional(prefix: Array) -> Array:
    """P(a_j | a_<j) from prefix probabilities (works on jnp and numpy arrays)."""
    xp = jnp if isinstance(prefix, jax.Array) else np
    prev = xp.concatenate([xp.ones_like(prefix[:, :1]), prefix[:, :-1]], axis=1)
    # a ratio of two quadrature results can round a hair above 1
    return xp.clip(prefix / xp.maximum(prev, 1e-300), 0.0, 1.0)


def rank_core(fam, cfg, k: int, h, state, ctx, keys, elig, eps, t):
    """(arms [B, k], per-slot propensity (index families) or the P_uniform prefix (Thompson
    families, finished on the host) [B, k], scores [B, N], first-slot probabilities [B, N])."""
    mask = state.meta.active[None, :] & elig
    n = mask.shape[-1]
    noise = tiebreak(keys, n)
    if fam.rank is not None:
        greedy, scores = fam.rank(cfg, h, state, ctx, keys, mask, t, k)
    else:
        scores = fam.scores(cfg, h, state, ctx, keys, mask, t)
        greedy = top_k(scores, mask, noise, k)
    # The same key-hashed uniform as single-arm selects decides exploration.
    explore = key_uniform(keys) < eps
    arms = jnp.where(explore[:, None], uniform_list(mask, noise, k), greedy)
    unif = uniform_prefix(mask, k)
    if fam.kind == "argmax":
        mixed = (1.0 - eps) * greedy_prefix(scores, mask, arms) + eps * unif
        first = mix_epsilon(tie_probs(scores, mask), mask, eps)
        return arms, conditional(mixed), scores, first
    # Thompson families: the host mixes its prefix model with these uniform prefixes.
    return arms, unif, scores, jnp.full(scores.shape, jnp.nan, scores.dtype)


def cascade_observed(rewards: Array) -> Array:
    """Slots up to and including the first click are observed; later slots are not."""
    xp = jnp if isinstance(rewards, jax.Array) else np
    clicked = rewards > 0
    before = xp.cumsum(clicked, axis=-1) - clicked  # clicks strictly before each slot
    return (before == 0).astype(xp.float64)


def observed_mask(observe: str, rewards: Array) -> Array:
    """The ``observed`` weights of ranked feedback under a family's ``observe`` rule."""
    if observe == "cascade":
        return cascade_observed(rewards)
    xp = jnp if isinstance(rewards, jax.Array) else np
    return xp.ones(rewards.shape, xp.float64)
