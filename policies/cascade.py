"""Cascading bandits (algorithms.md §5): CascadeUCB1, CascadeKL-UCB, CascadeTS, CascadeLinTS and
CascadeLinUCB.

The user scans the list top-down and clicks the first attractive item. Feedback is the list and
the per-slot clicks; slots up to and including the first click are observed (``observed`` mask,
derived by the builder), later slots are not and never update anything.

Stats (all sums): per item ``n`` (times examined) and ``c`` (clicks when examined), plus the
round counter ``rounds``; the linear variants keep ``G = sum x x^T`` and ``b = sum x * click``
over examined items (``M = lam*I + G / sigma^2`` is formed at read time).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from .base import segment_sum
from .family import Family, Hyper, no_cache, non_negative, positive
from .linear import ridge
from .rank_probs import BetaRank, SampledRank

INF = jnp.inf


def _count_init(cfg, cap, dim):
    return {"n": np.zeros(cap), "c": np.zeros(cap), "rounds": np.zeros(())}


def _rounds(w):
    return jnp.sum(jnp.any(w > 0, axis=-1))


def _count_delta(cfg, h, state, ctx, arms, r, w, prop, t):
    n = state.meta.active.shape[0]
    a = arms.reshape(-1)
    return {
        "n": segment_sum(w.reshape(-1), a, n),
        "c": segment_sum((w * r).reshape(-1), a, n),
        "rounds": _rounds(w).astype(jnp.float64),
    }


def _clock(stats):
    """The current round t = 1 + rounds observed so far."""
    return 1.0 + stats["rounds"]


# --- CascadeUCB1 -------------------------------------------------------------------------------


def _ucb1_scores(cfg, h, state, ctx, keys, mask, t):
    n, c = state.stats["n"], state.stats["c"]
    safe = jnp.maximum(n, 1.0)
    u = c / safe + jnp.sqrt(h["c_explore"] * jnp.log(_clock(state.stats)) / safe)
    u = jnp.where(n > 0, u, INF)  # unexamined items first (in random order); never clipped
    return jnp.broadcast_to(u, (keys.shape[0], n.shape[0]))


# --- CascadeKL-UCB -----------------------------------------------------------------------------

KL_CLAMP = 1e-12
KL_STEPS = 36  # bisection on [w, 1]: 2^-36 ~ 1.5e-11, far below the 1e-6 tolerance of algorithms.md


def bernoulli_kl(p, q):
    p = jnp.clip(p, KL_CLAMP, 1.0 - KL_CLAMP)
    q = jnp.clip(q, KL_CLAMP, 1.0 - KL_CLAMP)
    return p * jnp.log(p / q) + (1.0 - p) * jnp.log((1.0 - p) / (1.0 - q))


def kl_ucb_index(w, n, t):
    """max{q in [w, 1]: n KL(w || q) <= ln t + 3 ln ln t}, with the §5.3 edge cases."""
    lt = jnp.log(jnp.maximum(t, 1.0))
    thr = lt + 3.0 * jnp.maximum(jnp.log(jnp.maximum(lt, 1e-300)), 0.0)
    safe = jnp.maximum(n, 1.0)
    budget = thr / safe

    def step(_, lohi):
        lo, hi = lohi
        mid = 0.5 * (lo + hi)
        ok = bernoulli_kl(w, mid) <= budget
        return jnp.where(ok, mid, lo), jnp.where(ok, hi, mid)

    lo, _ = jax.lax.fori_loop(0, KL_STEPS, step, (w, jnp.ones_like(w)))
    u = jnp.where(w >= 1.0, 1.0, lo)
    u = jnp.where(w <= 0.0, 1.0 - jnp.exp(-budget), u)  # closed form at w = 0
    return jnp.where(n > 0, u, INF)


def _klucb_scores(cfg, h, state, ctx, keys, mask, t):
    n, c = state.stats["n"], state.stats["c"]
    u = kl_ucb_index(c / jnp.maximum(n, 1.0), n, _clock(state.stats))
    return jnp.broadcast_to(u, (keys.shape[0], n.shape[0]))


# --- CascadeTS ---------------------------------------------------------------------------------


def _beta_params(h, stats):
    return h["prior_a"] + stats["c"], h["prior_b"] + jnp.maximum(stats["n"] - stats["c"], 0.0)


def _ts_scores(cfg, h, state, ctx, keys, mask, t):
    a, b = _beta_params(h, state.stats)
    return jax.vmap(lambda k: jax.random.beta(k, a, b))(keys)


def _ts_host_draw(cfg, h, stats, cache, rng):
    return rng.beta(
        h["prior_a"] + stats["c"], h["prior_b"] + np.maximum(stats["n"] - stats["c"], 0.0)
    )


def _ts_model(cfg, h, stats, cache, mask, ctx, k, seed):
    a = h["prior_a"] + stats["c"]
    b = h["prior_b"] + np.maximum(stats["n"] - stats["c"], 0.0)
    return BetaRank(a, b, mask)


# --- linear cascades ---------------------------------------------------------------------------


def _lin_init(cfg, cap, dim):
    return {
        "G": np.zeros((dim, dim)),
        "b": np.zeros(dim),
        "n": np.zeros(cap),
        "c": np.zeros(cap),
        "rounds": np.zeros(()),
    }


def _lin_delta(cfg, h, state, ctx, arms, r, w, prop, t):
    """ctx: [B, k, d], the shown items' feature rows (the builder gathers them)."""
    xw = ctx * w[..., None]
    d = ctx.shape[-1]
    flat_x, flat_xw = ctx.reshape(-1, d), xw.reshape(-1, d)
    out = _count_delta(cfg, h, state, None, arms, r, w, prop, t)
    out["G"] = flat_xw.T @ flat_x
    out["b"] = (flat_xw * r.reshape(-1, 1)).sum(0)
    return out


def _lin_refresh(cfg, h, stats):
    # M = lam*I + G/sigma^2 and theta_bar = M^-1 b/sigma^2: the scale is applied at read time.
    s2 = h["sigma"] ** 2
    theta, Minv, L = ridge(h["lam"], stats["G"] / s2, stats["b"] / s2)
    return {"theta": theta, "Minv": Minv, "L": L}


def _lin_ucb_scores(cfg, h, state, ctx, keys, mask, t):
    th, Minv = state.cache["theta"], state.cache["Minv"]
    mean = ctx @ th
    var = jnp.einsum("bnd,de,bne->bn", ctx, Minv, ctx)
    return jnp.minimum(mean + h["c_explore"] * jnp.sqrt(jnp.maximum(var, 0.0)), 1.0)


def lin_draws(h, cache, keys):
    """One theta draw per row: theta_bar + v * L^-T z, covariance v^2 M^-1 (no inverse)."""
    th, L = cache["theta"], cache["L"]

    def one(k):
        z = jax.random.normal(k, th.shape)
        return th + h["v"] * jax.scipy.linalg.solve_triangular(L.T, z, lower=False)

    return jax.vmap(one)(keys)


def _lin_ts_scores(cfg, h, state, ctx, keys, mask, t):
    theta = lin_draws(h, state.cache, keys)
    return jnp.einsum("bnd,bd->bn", ctx, theta)


def host_theta(h, cache, m, rng):
    """[m, d] posterior draws of theta with numpy (the kernel's distribution)."""
    th, L = cache["theta"], cache["L"]
    z = rng.standard_normal((m, th.shape[0]))
    return th[None, :] + h["v"] * np.linalg.solve(L.T, z.T).T


def host_top_k(scores, mask, k, noise):
    """``ranked.top_k`` with numpy: [M, N] scores -> [M, k]; exact ties in ``noise`` order
    (identical item features tie in every draw, and their orders must share the mass)."""
    s = np.where(mask[None, :], scores, -np.inf)
    part = np.argpartition(-s, k - 1, axis=1)[:, :k]
    top = np.take_along_axis(s, part, axis=1)
    out = np.take_along_axis(part, np.argsort(-top, axis=1, kind="stable"), axis=1)
    # Rows where the k-th score is shared (inside the list or with an item left out) are
    # re-ranked exactly; argpartition alone would order them by item index.
    kth = top.min(axis=1, keepdims=True)
    tied = ((s == kth) & mask[None, :]).sum(axis=1) > 1
    tied |= (np.diff(np.sort(top, axis=1), axis=1) == 0).any(axis=1)
    if tied.any():
        rows = np.flatnonzero(tied)
        n = np.broadcast_to(noise, s.shape)[rows] if noise.ndim == 2 else noise[rows]
        out[rows] = np.lexsort((-n, -s[rows]), axis=1)[:, :k]
    return out


def _lin_ts_model(cfg, h, stats, cache, mask, ctx, k, seed):
    rng = np.random.default_rng(seed)
    m = int(cfg["mc_draws"])
    theta = host_theta(h, cache, m, rng)
    noise = rng.random((m, mask.shape[0]))
    return SampledRank(host_top_k(theta @ ctx.T, mask, k, noise), mask.shape[0])


_PRIORS = {
    "prior_a": Hyper(1.0, "Beta prior alpha_0 (pseudo-clicks)", check=positive, rule="> 0"),
    "prior_b": Hyper(1.0, "Beta prior beta_0 (pseudo-skips)", check=positive, rule="> 0"),
}
_LIN = {
    "lam": Hyper(1.0, "ridge lambda (M = lam*I + sum x x^T / sigma^2)", check=positive, rule="> 0"),
    "sigma": Hyper(1.0, "click noise scale sigma", check=positive, rule="> 0"),
}
_EXPLORE_UCB1 = Hyper(1.5, "exploration constant (1.5 in Kveton et al.)", check=non_negative)


def _mc_draws_ok(x) -> bool:
    return isinstance(x, int | float) and 256 <= float(x) <= 1 << 20 and float(x) == int(x)


_COMMON = dict(kind="argmax", ranked=True, observe="cascade", reward_kinds=("binary",))

CASCADE_UCB1 = Family(
    name="cascade_ucb1",
    doc="CascadeUCB1 (Kveton et al. 2015): top-k by c/n + sqrt(1.5 ln t / n); unexamined first.",
    contextual=False,
    hypers={"c_explore": _EXPLORE_UCB1},
    init_stats=_count_init,
    delta=_count_delta,
    refresh=no_cache,
    scores=_ucb1_scores,
    **_COMMON,  # type: ignore[arg-type]
)

CASCADE_KLUCB = Family(
    name="cascade_klucb",
    doc="CascadeKL-UCB: top-k by the Bernoulli KL upper bound (ln t + 3 ln ln t threshold).",
    contextual=False,
    hypers={},
    init_stats=_count_init,
    delta=_count_delta,
    refresh=no_cache,
    scores=_klucb_scores,
    **_COMMON,  # type: ignore[arg-type]
)

CASCADE_TS = Family(
    name="cascade_ts",
    doc="CascadeTS: one Beta(1 + c, 1 + n - c) draw per item, top-k (the cascade default).",
    kind="sampled",
    contextual=False,
    ranked=True,
    observe="cascade",
    reward_kinds=("binary",),
    hypers=_PRIORS,
    init_stats=_count_init,
    delta=_count_delta,
    refresh=no_cache,
    scores=_ts_scores,
    rank_model=_ts_model,
    extra={
        "rank_probs": "exact (quadrature over the Beta posteriors)",
        "k_dependent": False,
        "host_draw": _ts_host_draw,
    },
)

CASCADE_LINUCB = Family(
    name="cascade_linucb",
    doc="CascadeLinUCB (Zong et al. 2016): per-item features, min(x.theta + c sqrt(x M^-1 x), 1).",
    contextual=True,
    per_arm_contexts="required",
    dim_stat="b",
    hypers={**_LIN, "c_explore": Hyper(0.5, "exploration scale c", check=non_negative)},
    init_stats=_lin_init,
    delta=_lin_delta,
    refresh=_lin_refresh,
    scores=_lin_ucb_scores,
    **_COMMON,  # type: ignore[arg-type]
)

CASCADE_LINTS = Family(
    name="cascade_lints",
    doc="CascadeLinTS (Zong et al. 2016): theta ~ N(theta_bar, v^2 M^-1), top-k by x.theta.",
    kind="sampled",
    contextual=True,
    ranked=True,
    observe="cascade",
    reward_kinds=("binary",),
    per_arm_contexts="required",
    dim_stat="b",
    hypers={
        **_LIN,
        "v": Hyper(1.0, "posterior scale v", check=non_negative, rule=">= 0"),
        "mc_draws": Hyper(
            32768,
            "lists simulated per (state, context) for the propensities",
            static=True,
            identity=False,
            check=_mc_draws_ok,
            rule="an integer in [256, 1048576]",
        ),
    },
    init_stats=_lin_init,
    delta=_lin_delta,
    refresh=_lin_refresh,
    scores=_lin_ts_scores,
    rank_model=_lin_ts_model,
    extra={"rank_probs": "Monte Carlo over lists per (state, context)"},
)
