"""Slate families (algorithms.md §6): position-based-model TS and in-slate TS.

``slate_pbm_ts``: per-item Beta TS under the position-based click model P(click at slot j) =
kappa_j * theta_item. Stats are per (item, slot) click and view counts, so kappa can be learned
(alternating maximum likelihood at read time) or configured, and changing it never touches the
sums. Posterior Beta(a0 + c_i, b0 + max(n~_i - c_i, 0)) with n~_i = sum_j kappa_j views_ij.

``slate_inslate_ts``: Eide, Leslie & Frigessi's in-slate Thompson sampling on a linear-Gaussian
model over per-item features: k posterior draws, each draw's top-k list, merged rank-major
(R_1[1], R_2[1], ..., R_k[1], R_1[2], ...) keeping the first k distinct items.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .base import segment_sum
from .cascade import host_theta, host_top_k, lin_draws
from .family import Family, Hyper, non_negative, positive, positive_int
from .linear import ridge
from .rank_probs import BetaRank, SampledRank
from .ranked import tiebreak, top_k

MAX_POSITIONS = 1024  # per (item, slot) statistics: N x positions floats twice
KAPPA_ROUNDS = 25  # alternating ML steps for a learned kappa (read time, O(N * slots) each)

# --- PBM-TS ------------------------------------------------------------------------------------


def _pbm_init(cfg, cap, dim):
    p = int(cfg["positions"])
    return {"clicks": np.zeros((cap, p)), "views": np.zeros((cap, p))}


def _pbm_delta(cfg, h, state, ctx, arms, r, w, prop, t):
    n, p = state.stats["views"].shape
    k = arms.shape[1]
    cell = (arms * p + jnp.arange(k)[None, :]).reshape(-1)
    return {
        "clicks": segment_sum((w * r).reshape(-1), cell, n * p).reshape(n, p),
        "views": segment_sum(w.reshape(-1), cell, n * p).reshape(n, p),
    }


def pbm_kappa(cfg, h, stats):
    """Examination probabilities per slot: configured, or fitted to the per-slot counts."""
    p = int(cfg["positions"])
    if cfg["kappa"] is not None:
        return jnp.asarray(cfg["kappa"], jnp.float64)
    clicks, views = stats["clicks"], stats["views"]
    c_item = clicks.sum(1)
    c_slot = clicks.sum(0)

    def step(_, kappa):
        theta = (h["prior_a"] + c_item) / (h["prior_a"] + h["prior_b"] + views @ kappa)
        exam = (views * theta[:, None]).sum(0)
        # one pseudo-impression at kappa = 1 keeps unseen slots defined and damps early noise
        kap = (c_slot + 1.0) / (exam + 1.0)
        kap = jnp.clip(kap / kap[0], 1e-3, 1.0)
        return jax.lax.cummin(kap)  # slots are ordered by attention

    return jax.lax.fori_loop(0, KAPPA_ROUNDS, step, jnp.ones(p))


def pbm_posterior(cfg, h, stats):
    kappa = pbm_kappa(cfg, h, stats)
    c = stats["clicks"].sum(1)
    n_tilde = stats["views"] @ kappa
    return h["prior_a"] + c, h["prior_b"] + jnp.maximum(n_tilde - c, 0.0), kappa


def _pbm_refresh(cfg, h, stats):
    a, b, kappa = pbm_posterior(cfg, h, stats)
    return {"a": a, "b": b, "kappa": kappa}


def _pbm_scores(cfg, h, state, ctx, keys, mask, t):
    a, b = state.cache["a"], state.cache["b"]
    return jax.vmap(lambda k: jax.random.beta(k, a, b))(keys)


def _pbm_host_draw(cfg, h, stats, cache, rng):
    return rng.beta(cache["a"], cache["b"])


def _pbm_model(cfg, h, stats, cache, mask, ctx, k, seed):
    return BetaRank(cache["a"], cache["b"], mask)


def _pbm_validate(params: Mapping[str, Any]) -> None:
    kappa = params["kappa"]
    if kappa is None:
        return
    try:
        kap = [float(v) for v in kappa]
    except (TypeError, ValueError):
        raise ValueError(f"kappa: must be a list of numbers or null, got {kappa!r}") from None
    if len(kap) != int(params["positions"]):
        raise ValueError(f"kappa: has {len(kap)} entries; positions is {params['positions']}")
    if kap[0] != 1.0 or any(not 0.0 < v <= 1.0 for v in kap):
        raise ValueError("kappa: must start at 1 and lie in (0, 1]")
    if any(b > a for a, b in zip(kap, kap[1:], strict=False)):
        raise ValueError("kappa: must be non-increasing (slot 1 gets the most attention)")
    # hashable, since it shapes the compiled program
    params["kappa"] = tuple(kap)  # type: ignore[index]


SLATE_PBM_TS = Family(
    name="slate_pbm_ts",
    doc="PBM Thompson sampling: Beta per item with kappa-weighted views; best item to slot 1.",
    kind="sampled",
    contextual=False,
    ranked=True,
    observe="all",
    reward_kinds=("binary",),
    hypers={
        "prior_a": Hyper(1.0, "Beta prior alpha_0", check=positive, rule="> 0"),
        "prior_b": Hyper(1.0, "Beta prior beta_0", check=positive, rule="> 0"),
        "positions": Hyper(
            10,
            "slots with their own statistics (>= the slate size)",
            static=True,
            check=lambda x: positive_int(x) and float(x) <= MAX_POSITIONS,
            rule=f"an integer in [1, {MAX_POSITIONS}]",
        ),
        "kappa": Hyper(
            None,
            "examination probability per slot (1 first, non-increasing); null = learn it",
            static=True,
        ),
    },
    init_stats=_pbm_init,
    delta=_pbm_delta,
    refresh=_pbm_refresh,
    scores=_pbm_scores,
    rank_model=_pbm_model,
    validate=_pbm_validate,
    extra={
        "rank_probs": "exact (quadrature over the Beta posteriors)",
        "k_dependent": False,
        "host_draw": _pbm_host_draw,
    },
)


# --- in-slate TS -------------------------------------------------------------------------------


def inslate_merge(lists):
    """[B, M, k] per-draw top-k lists -> [B, k]: rank-major round robin, first k distinct."""
    b, m, k = lists.shape
    order = jnp.swapaxes(lists, 1, 2).reshape(b, m * k)  # R_1[1], R_2[1], ..., R_M[1], R_1[2]...
    same = order[:, :, None] == order[:, None, :]
    earlier = jnp.tril(jnp.ones((m * k, m * k), bool), k=-1)
    first = ~jnp.any(same & earlier[None], axis=-1)
    pos = jnp.lexsort((jnp.arange(m * k)[None, :].repeat(b, 0), ~first), axis=-1)[:, :k]
    return jnp.take_along_axis(order, pos, axis=1)


def _lin_init(cfg, cap, dim):
    return {"G": np.zeros((dim, dim)), "b": np.zeros(dim), "n": np.zeros(cap)}


def _lin_delta(cfg, h, state, ctx, arms, r, w, prop, t):
    d = ctx.shape[-1]
    x = ctx.reshape(-1, d)
    xw = x * w.reshape(-1, 1)
    return {
        "G": xw.T @ x,
        "b": (xw * r.reshape(-1, 1)).sum(0),
        "n": segment_sum(w.reshape(-1), arms.reshape(-1), state.meta.active.shape[0]),
    }


def _lin_refresh(cfg, h, stats):
    theta, Ainv, L = ridge(h["lam"], stats["G"], stats["b"])
    return {"theta": theta, "L": L}


def _inslate_rank(cfg, h, state, ctx, keys, mask, t, k):
    n = mask.shape[-1]
    sub = jax.vmap(lambda kk: jax.random.split(kk, k))(keys)  # [B, k, 2]: one key per draw
    theta = jax.vmap(lambda ks: lin_draws(h, state.cache, ks))(sub)  # [B, k, d]
    scores = jnp.einsum("bnd,bsd->bsn", ctx, theta)
    noise = tiebreak(keys, n)
    lists = jnp.stack([top_k(scores[:, s], mask, noise, k) for s in range(k)], axis=1)
    return inslate_merge(lists), scores[:, 0]


_MERGE = jax.jit(inslate_merge)


def _inslate_model(cfg, h, stats, cache, mask, ctx, k, seed):
    rng = np.random.default_rng(seed)
    m = int(cfg["mc_draws"])
    theta = host_theta(h, cache, m * k, rng)  # [m*k, d]
    # one tie-break noise per simulated procedure, shared by its k draws (as in the kernel)
    noise = np.repeat(rng.random((m, mask.shape[0])), k, axis=0)
    lists = host_top_k(theta @ ctx.T, mask, k, noise).reshape(m, k, k)
    return SampledRank(np.asarray(_MERGE(lists)), mask.shape[0])


SLATE_INSLATE_TS = Family(
    name="slate_inslate_ts",
    doc="In-slate TS (Eide, Leslie & Frigessi): k posterior draws merged rank-major, linear model.",
    kind="sampled",
    contextual=True,
    ranked=True,
    observe="all",
    per_arm_contexts="required",
    dim_stat="b",
    hypers={
        "lam": Hyper(1.0, "ridge lambda (A = lam*I + sum x x^T)", check=positive, rule="> 0"),
        "v": Hyper(1.0, "posterior scale v", check=non_negative, rule=">= 0"),
        "mc_draws": Hyper(
            8192,
            "slates simulated per (state, context) for the propensities",
            static=True,
            identity=False,
            check=lambda x: isinstance(x, int | float) and 256 <= float(x) <= 1 << 20,
            rule="an integer in [256, 1048576]",
        ),
    },
    init_stats=_lin_init,
    delta=_lin_delta,
    refresh=_lin_refresh,
    rank=_inslate_rank,
    rank_model=_inslate_model,
    extra={"rank_probs": "Monte Carlo over the whole procedure per (state, context)"},
)
