"""Diag-LinUCB (Online Matching, Yi et al. 2023; algorithms.md §3): LinUCB with each item's A_j
replaced by its diagonal, so every (item, cluster) pair is an independent pair of sums.

Stats per (item j, cluster c): ``d[j, c] = sum w x_c^2`` and ``b[j, c] = sum w r x_c`` (plus the
count ``n[j]``). The ridge prior is added at read time, so a never-seen pair is the prior
``(lam, 0)`` and deltas from any number of writers merge by ``+``:

    UCB(x, j) = sum_c x_c b_jc / (lam + d_jc)  +  alpha * sqrt(sum_c x_c^2 / (lam + d_jc))

Contexts are cluster-weight vectors ``[B, C]`` (a user's top-K clusters, zero elsewhere). The
cache holds ``b/(lam+d)`` and ``1/(lam+d)`` cluster-major (``[C, N]``), so a context with at most
``max_nnz`` non-zero weights reads K contiguous rows of N floats instead of two [N, C] matrices:
at 10,000 items x 1,000 clusters that is ~0.8 MB per select instead of 160 MB. A batch with a
denser row takes the dense product (same numbers, another summation order).

[recon] (algorithms.md §12.1): the initial ``d`` is ``lam`` (default 1), every (item, cluster)
pair exists (a missing edge reads as the prior; the optional restriction of the bonus to existing
edges is not implemented), and no decay is applied.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from .base import segment_sum
from .family import Family, Hyper, non_negative, positive

Array = jax.Array


def _init(cfg, cap, dim):
    return {"d": np.zeros((cap, dim)), "b": np.zeros((cap, dim)), "n": np.zeros(cap)}


def _columns(h, d, b):
    inv = 1.0 / (h["lam"] + d)
    return b * inv, inv


def _refresh(cfg, h, stats):
    theta, inv = _columns(h, stats["d"], stats["b"])
    return {"theta": theta.T, "dinv": inv.T}


def _incremental(cfg, h, state, stats, x, arms, w):
    """Rewrite only the played items' columns; exact (each entry is recomputed from the sums),
    so no periodic refactorization is needed. Padding rows rewrite arm 0 with its own value."""
    theta, inv = _columns(h, stats["d"][arms], stats["b"][arms])
    c = state.cache
    return {"theta": c["theta"].at[:, arms].set(theta.T), "dinv": c["dinv"].at[:, arms].set(inv.T)}


def _delta(cfg, h, state, x, arms, r, w, prop, t):
    n = state.meta.active.shape[0]
    return {
        "d": segment_sum(w[:, None] * x * x, arms, n),
        "b": segment_sum((w * r)[:, None] * x, arms, n),
        "n": segment_sum(w, arms, n),
    }


def _accumulate(cfg, h, state, x, arms, r, w, prop, t):
    """stats + delta as a scatter-add of the batch rows: O(B C), not O(N C)."""
    st = state.stats
    return {
        "d": st["d"].at[arms].add(w[:, None] * x * x),
        "b": st["b"].at[arms].add((w * r)[:, None] * x),
        "n": st["n"].at[arms].add(w),
    }


def sparse_moments(cache, idx, vals):
    """Mean and variance [B, N] from a padded sparse context: ``idx[B, K]`` cluster ids and their
    weights ``vals[B, K]`` (padding entries carry weight 0, any valid id). Step k reads, for
    every context, the row of its k-th cluster: N contiguous floats of the cluster-major cache."""

    # One cluster per step, accumulated in place: a single [B, K, N] gather followed by a
    # contraction is 2x slower for one row and 7x for 128 (it writes and rereads B*K*N floats).
    def step(k, acc):
        mean, var = acc
        i, v = idx[:, k], vals[:, k, None]
        return mean + v * cache["theta"][i], var + v * v * cache["dinv"][i]

    zero = jnp.zeros((idx.shape[0], cache["theta"].shape[1]), cache["theta"].dtype)
    return jax.lax.fori_loop(0, idx.shape[1], step, (zero, zero))


def dense_moments(cache, x):
    return x @ cache["theta"], (x * x) @ cache["dinv"]


def to_sparse(x, k: int):
    """The ``k`` largest-magnitude entries of each row as (indices, values); exact when no row
    has more than ``k`` non-zeros."""
    _, idx = jax.lax.top_k(jnp.abs(x), k)
    return idx, jnp.take_along_axis(x, idx, axis=1)


def _scores(cfg, h, state, ctx, keys, mask, t):
    k = int(min(cfg["max_nnz"], ctx.shape[-1]))
    if k == 0 or k == ctx.shape[-1]:
        mean, var = dense_moments(state.cache, ctx)
    else:
        sparse_ok = jnp.all(jnp.sum(ctx != 0, axis=-1) <= k)

        def sparse(c):
            return sparse_moments(state.cache, *to_sparse(c, k))

        mean, var = jax.lax.cond(sparse_ok, sparse, lambda c: dense_moments(state.cache, c), ctx)
    return mean + h["alpha"] * jnp.sqrt(jnp.maximum(var, 0.0))


def _check_nnz(x) -> bool:
    return isinstance(x, int | float) and float(x) >= 0 and float(x) == int(x)


DIAG_LINUCB = Family(
    name="diag_linucb",
    doc="Diag-LinUCB (Online Matching, Yi et al. 2023): per-(item, cluster) sums d = sum w^2, "
    "b = sum w r; UCB = sum_c w_c b_c/(lam+d_c) + alpha*sqrt(sum_c w_c^2/(lam+d_c)). Contexts are "
    "cluster weights [B, C]; stats are pure sums (any number of writers). With one-hot contexts "
    "it is disjoint LinUCB.",
    kind="argmax",
    contextual=True,
    dim_stat="b",
    per_arm_contexts="no",
    hypers={
        "alpha": Hyper(1.0, "exploration scale alpha", check=non_negative, rule=">= 0"),
        "lam": Hyper(
            1.0,
            "prior added to every d at read time (an unseen pair reads as d = lam)",
            check=positive,
            rule="> 0",
        ),
        "max_nnz": Hyper(
            16,
            "contexts with at most this many non-zero weights per row are scored by gathering "
            "those clusters' rows (0 = always dense); it changes speed, never the scores",
            static=True,
            check=_check_nnz,
            rule="an integer >= 0",
            identity=False,
        ),
    },
    init_stats=_init,
    delta=_delta,
    refresh=_refresh,
    refresh_incremental=_incremental,
    accumulate=_accumulate,
    scores=_scores,
)
