"""Linear contextual families: disjoint/shared LinUCB and LinTS (algorithms.md §1.4, §2.1).

Stats are ``G = sum w x x^T`` and ``b = sum w r x`` (plus counts); ``A = lam*I + G`` is formed at
read time, so deltas from any replica merge by ``+``. The cache holds ``theta = A^-1 b`` and
``A^-1`` packed as its upper triangle with doubled off-diagonals (``qf``, a row per arm), so
``x^T A^-1 x`` is one ``qf @ pack(x x^T)`` product: half the flops and bytes of the dense form,
the same for one context or a thousand.
"""

from __future__ import annotations

from functools import cache

import jax
import jax.numpy as jnp
import numpy as np

from .base import segment_sum, tie_probs
from .family import Family, Hyper, non_negative, positive, positive_int

GH_NODES = 48  # Gauss-Hermite nodes for the independent-normal choice probabilities


@cache
def _triu(d: int):
    i, j = np.triu_indices(d)
    return i, j, np.where(i == j, 1.0, 2.0)


def pack_outer(x):
    """[..., d] -> [..., d(d+1)/2]: the upper triangle of x x^T, row by row (triu order).

    For many rows it is built from d static slices, which XLA fuses into the consumer (a batch
    of 1,000 selects twice as fast); for a few rows the gather is the cheaper program.
    """
    d = x.shape[-1]
    if x.size // d <= 16:
        i, j, _ = _triu(d)
        return x[..., i] * x[..., j]
    return jnp.concatenate([x[..., i : i + 1] * x[..., i:] for i in range(d)], axis=-1)


def _pack_sym(m):
    """[..., d, d] -> [..., P] so that pack_outer(x) @ packed == x^T m x."""
    i, j, scale = _triu(m.shape[-1])
    return m[..., i, j] * scale


def _zeros_init(cfg, cap, dim):
    if cfg["shared"]:
        return {"G": np.zeros((dim, dim)), "b": np.zeros(dim), "n": np.zeros(cap)}
    return {"G": np.zeros((cap, dim, dim)), "b": np.zeros((cap, dim)), "n": np.zeros(cap)}


def ridge(lam, G, b):
    """(theta, A^-1, L) for A = lam*I + G, batched over leading axes; factorized, not inverted."""
    d = G.shape[-1]
    A = lam * jnp.eye(d) + 0.5 * (G + jnp.swapaxes(G, -1, -2))
    L = jnp.linalg.cholesky(A)
    eye = jnp.broadcast_to(jnp.eye(d), A.shape)
    Linv = jax.scipy.linalg.solve_triangular(L, eye, lower=True)
    Ainv = jnp.swapaxes(Linv, -1, -2) @ Linv
    theta = (Ainv @ b[..., None])[..., 0]
    return theta, Ainv, L


def _serving(cfg, theta, Ainv, L):
    dt = jnp.dtype(cfg["serving_dtype"])
    if cfg["shared"]:
        return {"theta": theta.astype(dt), "Ainv": Ainv.astype(dt), "L": L}
    # Rows per arm: a single context's variance is then one contiguous [N, P] @ [P] product
    # (~25% faster than [P] @ [P, N] here) and an update rewrites one contiguous row.
    return {"theta": theta.astype(dt), "qf": _pack_sym(Ainv).astype(dt), "Ainv": Ainv}


def _refresh(cfg, h, stats):
    theta, Ainv, L = ridge(h["lam"], stats["G"], stats["b"])
    return _serving(cfg, theta, Ainv, L)


SCAN_MAX_ROWS = 512  # above this many rows per update, refactorizing every arm is cheaper


def _incremental(cfg, h, state, stats, x, arms, w):
    """Cache after an update, from the previous cache: O(d^2) per row instead of O(N d^3).

    Each row is a Sherman-Morrison step on its arm's A^-1, then that arm's theta and packed
    column are rewritten in place (the scan carry is updated with dynamic slices, so only the
    touched arm is read or written). Batches above SCAN_MAX_ROWS refactorize instead; the
    builder also refactorizes every ``refresh_every`` versions, which bounds float drift.
    """
    if cfg["shared"] or x.shape[0] > SCAN_MAX_ROWS:
        return _refresh(cfg, h, stats)
    dt = jnp.dtype(cfg["serving_dtype"])
    iu, ju, scale = _triu(x.shape[-1])
    b = stats["b"]

    def row(carry, inp):
        Ainv, qf, theta = carry
        xr, a, wr = inp
        u = xr * jnp.sqrt(jnp.maximum(wr, 0.0))
        A_a = Ainv[a]
        Au = A_a @ u
        A_a = A_a - jnp.outer(Au, Au) / (1.0 + u @ Au)
        Ainv = Ainv.at[a].set(A_a)
        qf = qf.at[a].set((A_a[iu, ju] * scale).astype(dt))
        theta = theta.at[a].set((A_a @ b[a]).astype(dt))
        return (Ainv, qf, theta), None

    c = state.cache
    (Ainv, qf, theta), _ = jax.lax.scan(row, (c["Ainv"], c["qf"], c["theta"]), (x, arms, w))
    return {"theta": theta, "qf": qf, "Ainv": Ainv}


def _delta(cfg, h, state, x, arms, r, w, prop, t):
    n = state.meta.active.shape[0]
    counts = segment_sum(w, arms, n)
    if cfg["shared"]:
        xw = x * w[:, None]
        return {"G": xw.T @ x, "b": xw.T @ r, "n": counts}
    outer = (x * w[:, None])[:, :, None] * x[:, None, :]
    return {
        "G": segment_sum(outer, arms, n),
        "b": segment_sum(x * (w * r)[:, None], arms, n),
        "n": counts,
    }


def _accumulate(cfg, h, state, x, arms, r, w, prop, t):
    """stats + delta without materializing a capacity-sized delta: a scatter-add of the batch's
    rows, in place when the state is donated (O(B d^2) rather than O(N d^2))."""
    if cfg["shared"]:
        d = _delta(cfg, h, state, x, arms, r, w, prop, t)
        return {k: state.stats[k] + d[k] for k in state.stats}
    st = state.stats
    xw = x * w[:, None]
    return {
        "G": st["G"].at[arms].add(xw[:, :, None] * x[:, None, :]),
        "b": st["b"].at[arms].add(xw * r[:, None]),
        "n": st["n"].at[arms].add(w),
    }


def moments(cfg, state, ctx):
    """Posterior mean and variance of each arm's score, [B, N] each (serving dtype)."""
    c = state.cache
    dt = jnp.dtype(cfg["serving_dtype"])
    x = ctx.astype(dt)
    if cfg["shared"]:
        mean = x @ c["theta"]
        var = jnp.einsum("bnd,de,bne->bn", x, c["Ainv"], x)
    elif x.ndim == 2:
        # [N, P] @ [P, B]: the cache is the left operand, so XLA streams it without a transpose
        mean = (c["theta"] @ x.T).T
        var = (c["qf"] @ pack_outer(x).T).T
    else:
        mean = jnp.einsum("bnd,nd->bn", x, c["theta"])
        var = jnp.einsum("bnp,np->bn", pack_outer(x), c["qf"])
    return mean, jnp.maximum(var, 0.0)


def _linucb_scores(cfg, h, state, ctx, keys, mask, t):
    mean, var = moments(cfg, state, ctx)
    return mean + h["alpha"].astype(mean.dtype) * jnp.sqrt(var)


def _lints_scores(cfg, h, state, ctx, keys, mask, t):
    if cfg["shared"]:
        L = state.cache["L"]
        theta = state.cache["theta"].astype(L.dtype)

        def one(x, k):
            z = jax.random.normal(k, theta.shape)
            draw = theta + h["alpha"] * jax.scipy.linalg.solve_triangular(L.T, z, lower=False)
            return x.astype(L.dtype) @ draw

        return jax.vmap(one)(ctx, keys)
    mean, var = moments(cfg, state, ctx)
    z = jax.vmap(lambda k: jax.random.normal(k, mean.shape[1:], mean.dtype))(keys)
    return mean + h["alpha"].astype(mean.dtype) * jnp.sqrt(var) * z


def normal_argmax_probs(mean, sd, mask):
    """P(arm a has the largest of independent N(mean, sd^2) draws), by Gauss-Hermite quadrature.

    P(a) = E_z[ prod_{j != a} Phi((m_a + s_a z - m_j) / s_j) ], z ~ N(0, 1). Cost O(N^2 Q) a row.
    """
    z, wq = np.polynomial.hermite_e.hermegauss(GH_NODES)
    z = jnp.asarray(z)
    wq = jnp.asarray(wq / np.sqrt(2 * np.pi))
    mean = mean.astype(jnp.float64)
    sd = jnp.maximum(sd.astype(jnp.float64), 1e-12)

    def row(m, s, msk):
        pts = m[:, None] + s[:, None] * z[None, :]  # [N(a), Q]
        logphi = jax.scipy.stats.norm.logcdf((pts[:, :, None] - m[None, None, :]) / s)  # [a,Q,j]
        logphi = jnp.where(msk[None, None, :], logphi, 0.0)
        total = logphi.sum(-1) - jnp.where(msk[:, None], jnp.diagonal(logphi, 0, 0, 2).T, 0.0)
        p = jnp.where(msk, jnp.exp(total) @ wq, 0.0)
        return p / jnp.maximum(p.sum(), 1e-300)

    return jax.vmap(row)(mean, sd, mask)


def _lints_probs(cfg, h, state, ctx, mask, t):
    if cfg["shared"]:
        return _shared_mc_probs(cfg, h, state, ctx, mask)
    mean, var = moments(cfg, state, ctx)
    return normal_argmax_probs(mean, h["alpha"] * jnp.sqrt(var), mask)


def _shared_mc_probs(cfg, h, state, ctx, mask):
    """Shared-theta LinTS scores are correlated across arms: Monte Carlo per row."""
    L = state.cache["L"]
    theta = state.cache["theta"].astype(L.dtype)
    draws = cfg["mc_draws"]
    z = jax.random.normal(jax.random.PRNGKey(7), (draws, theta.shape[0]))
    thetas = theta + h["alpha"] * jax.scipy.linalg.solve_triangular(L.T, z.T, lower=False).T

    x = ctx.astype(L.dtype)

    def row(x, msk):
        s = jnp.where(msk[None, :], thetas @ x.T, -jnp.inf)
        win = jnp.argmax(s, axis=-1)
        return jnp.bincount(win, length=msk.shape[0]) / draws

    def row_ties(x, msk):
        # tied draws share the win, matching the sampler's uniform tie-break
        return tie_probs(thetas @ x.T, msk[None, :]).sum(0) / draws

    # A tie has positive probability only if alpha = 0 or two eligible arms carry identical
    # features (A is positive definite); a random projection spots those, and only then is the
    # ~2x dearer tie-aware count paid for.
    proj = jnp.where(mask, x @ jax.random.normal(jax.random.PRNGKey(8), (x.shape[-1],)), jnp.inf)
    srt = jnp.sort(proj, axis=-1)
    dup = jnp.any((srt[:, 1:] == srt[:, :-1]) & jnp.isfinite(srt[:, 1:]))
    return jax.lax.cond(
        (h["alpha"] == 0) | dup,
        lambda: jax.vmap(row_ties)(x, mask),
        lambda: jax.vmap(row)(x, mask),
    )


def _check_dtype(x) -> bool:
    return x in ("float64", "float32")


_COMMON = {
    "lam": Hyper(1.0, "ridge lambda (A = lam*I + sum x x^T)", check=positive, rule="> 0"),
    "shared": Hyper(
        False, "one shared parameter over per-arm features [B, N, d] (else disjoint)", static=True
    ),
    "refresh_every": Hyper(
        64,
        "versions between full refactorizations of the cache (bounds the "
        "drift of incremental Sherman-Morrison updates)",
        static=True,
        check=positive_int,
        rule="integer >= 1",
        identity=False,
    ),
    "serving_dtype": Hyper(
        "float64",
        "dtype of the serving cache and select arithmetic; stats stay float64",
        static=True,
        check=_check_dtype,
        rule="'float64' or 'float32'",
        identity=False,
    ),
}


LINUCB = Family(
    name="linucb",
    doc="LinUCB (Li et al. 2010). Disjoint: one ridge model per arm, p = theta_a.x + "
    "alpha*sqrt(x^T A_a^-1 x); a fresh arm scores alpha*|x|/sqrt(lam). shared=True: one model "
    "over per-arm features.",
    kind="argmax",
    contextual=True,
    dim_stat="b",
    hypers={
        "alpha": Hyper(1.0, "exploration scale alpha", check=non_negative, rule=">= 0"),
        **_COMMON,
    },
    init_stats=_zeros_init,
    delta=_delta,
    refresh=_refresh,
    refresh_incremental=_incremental,
    accumulate=_accumulate,
    scores=_linucb_scores,
)

LIN_TS = Family(
    name="lin_ts",
    doc="Linear Thompson sampling (Agrawal & Goyal 2013): draws from N(theta, alpha^2 A^-1). "
    "Disjoint: independent per-arm scores, probabilities by quadrature; shared=True: one "
    "theta draw per decision, probabilities by Monte Carlo (mc_draws).",
    kind="sampled",
    contextual=True,
    dim_stat="b",
    hypers={
        "alpha": Hyper(1.0, "posterior scale v", check=non_negative, rule=">= 0"),
        **_COMMON,
        "mc_draws": Hyper(
            4096,
            "draws for shared-model choice probabilities",
            static=True,
            check=positive_int,
            rule="integer >= 1",
            identity=False,
        ),
    },
    init_stats=_zeros_init,
    delta=_delta,
    refresh=_refresh,
    refresh_incremental=_incremental,
    accumulate=_accumulate,
    scores=_lints_scores,
    sample_probs=_lints_probs,
)
