"""Per-arm kernel bandits of Hu, Leung & Farnia (arXiv 2410.13287; algorithms.md §4).

Each arm (a generator, an LLM) has its own regression function of the prompt embedding.

PAK-UCB (§4.1): exact kernel ridge regression per arm. The stats are a point log: per arm the
latest ``window`` prompts, scores, weights and event times. For prompt ``y`` and an arm's points
``Y`` (scores ``s``, weights ``w``), with ``M = (K + lam W^-1)^-1`` and ``k = k(Y, y)``:

    mu = k^T M s        sigma = lam^(-1/2) sqrt(max(0, k(y, y) - k^T M k))
    UCB = mu + alpha * sigma,   arms without points first (+inf).

(``lam`` and ``alpha`` are the paper's alpha and eta: banditd names the ridge ``lam`` and the
exploration scale ``alpha`` in every family.) With unit weights this is the paper's formula; a
weight ``w`` scales a point's squared error, which keeps the linear kernel equal to disjoint
LinUCB on weighted rows. The cache keeps ``M`` (zero-padded to the window: empty slots are an
identity block, so a fixed shape holds any number of points), ``beta = M s`` and the points'
squared norms. A new point extends ``M`` by block inversion, and past the window the evicted
point's row and column are first removed by the Schur-complement downdate ``M - m m^T / m_jj``:
O(window^2) per point; large batches and every ``refresh_every`` versions rebuild ``M`` by
Cholesky. Select and rebuilds work on the smallest size bucket (16, 64, 256, ..., window) that
holds the points, so an experiment pays for the points it has, not for the cap.

The point log is not a sum (DESIGN.md §4): two replicas' logs merge by union, each arm keeping
its latest ``window`` points by event time ``t`` (equal times: the earlier applied goes first).
``merge`` says so and ``combine`` implements it; ``M`` is rebuilt from the merged log.

RFF-UCB (§4.2): disjoint LinUCB (linear.py's machinery) on random Fourier features
``phi(y) = sqrt(2/D) cos(y W0 / bandwidth + phase)``, ``W0 ~ N(0, 1)``, ``phase ~ U[0, 2 pi)``,
so ``phi(y).phi(y') ~ exp(-|y - y'|^2 / (2 bandwidth^2))``. The draw is a pure function of
(seed, D, prompt dimension) defined in ``rff_draw`` (SplitMix64 counters, Box-Muller): every
replica, numpy version and platform computes the same features, so Sum phi phi^T and Sum s phi
stay additive. Seed, D and bandwidth are identity parameters.

Not replicated from the reference code (§4.3): the missing parentheses in the first inverse
(here ``1/(k(y,y) + lam)``), RFF's double-counted first observation, the ignored exploration
argument, and the '2D' feature map without the 1/sqrt(D) factor.
"""

from __future__ import annotations

from functools import cache, partial

import jax
import jax.numpy as jnp
import numpy as np

from . import linear
from .base import segment_sum
from .family import Family, Hyper, non_negative, positive, positive_int

# --- shared -----------------------------------------------------------------------------------


def _kernel_name(x) -> bool:
    return x in ("rbf", "linear")


def _unplayed_first(scores, n):
    return jnp.where(n[None, :] > 0, scores, jnp.inf)


def _by_rows(fn, x, chunk: int):
    """fn(x) [B, ...] computed ``chunk`` rows at a time (a power of two) when B is larger, so a
    20k-row select does not hold 20k rows of temporaries at once."""
    rows = x.shape[0]
    if rows <= chunk:
        return fn(x)
    chunk = 1 << (chunk.bit_length() - 1)
    pad = -rows % chunk
    xs = jnp.concatenate([x, jnp.zeros((pad, *x.shape[1:]), x.dtype)])
    out = jax.lax.map(fn, xs.reshape(-1, chunk, *x.shape[1:]))
    return jax.tree.map(lambda o: o.reshape(-1, *o.shape[2:])[:rows], out)


# --- PAK-UCB ----------------------------------------------------------------------------------

MAX_FEATURES = 8192  # sum phi phi^T is D^2 * 8 bytes per arm: 512 MB per arm at the limit
MAX_WINDOW = 4096  # M alone is window^2 * 8 bytes per arm: 128 MB per arm at the limit
SELECT_ELEMENTS = 1 << 22  # rows x arms x points held at once when scoring (32 MB of float64)
# Above this many rows (or window / 4), an update rebuilds M (O(points^3) per arm) rather than
# stepping it once per row (O(window^2) each).
INCREMENTAL_MAX_ROWS = 64


@cache
def _sizes(window: int) -> tuple[int, ...]:
    """Size buckets: 0 (no points anywhere), 16, 64, 256, ... below the window, the window."""
    out, s = [0], 16
    while s < window:
        out.append(s)
        s *= 4
    return (*out, window)


def _bucket(window: int, count):
    return jnp.searchsorted(jnp.asarray(_sizes(window)), count, side="left")


def _kernel(cfg, h, xy, xsq, ysq):
    """Kernel values from inner products and squared norms (broadcast against each other)."""
    if cfg["kernel"] == "linear":
        return xy
    d2 = xsq + ysq - 2.0 * xy
    return jnp.exp(-jnp.maximum(d2, 0.0) / (2.0 * h["bandwidth"] ** 2))


def _sqnorm(x):
    return jnp.sum(x * x, axis=-1)


def _kdiag(cfg, x):
    """k(x, x) for rows x [..., p]."""
    if cfg["kernel"] == "linear":
        return jnp.sum(x * x, -1)
    return jnp.ones(x.shape[:-1], x.dtype)


def _pak_init(cfg, cap, dim):
    w = cfg["window"]
    return {
        "Y": np.zeros((cap, w, dim)),  # prompts
        "s": np.zeros((cap, w)),  # scores
        "w": np.zeros((cap, w)),  # weights; 0 marks an empty slot
        "t": np.zeros((cap, w)),  # event times (the window keeps the latest)
        "seq": np.zeros((cap, w)),  # 1-based arrival number in this log; 0 = empty
        "n": np.zeros(cap),  # points received (kept or not)
    }


def _pak_delta(cfg, h, state, x, arms, r, w, prop, t):
    """A delta is the batch's own point log; rows of weight 0 (padding) are ignored on merge."""
    return {"Y": x, "arm": arms, "s": r, "w": w, "t": t}


def _pak_combine(cfg, h, state, delta):
    """Merge a point log into the stats: each row goes to its arm's first empty slot, or, when
    the window is full, replaces the point with the smallest (t, seq) unless it is older still.
    With distinct event times the result is the latest ``window`` points of the union whatever
    the order of application; present points always fill slots [0, count) of their arm."""

    def insert(st, row):
        y, a, r, w, t = row
        present = st["w"][a] > 0
        ta = jnp.where(present, st["t"][a], -jnp.inf)
        tmin = jnp.min(ta)
        j = jnp.argmin(jnp.where(ta == tmin, st["seq"][a], jnp.inf))
        keep = (w > 0) & ~(jnp.all(present) & (t < tmin))
        seq = st["n"][a] + 1.0

        def put(name, value):
            return st[name].at[a, j].set(jnp.where(keep, value, st[name][a, j]))

        out = {
            "Y": put("Y", y),
            "s": put("s", r),
            "w": put("w", w),
            "t": put("t", t),
            "seq": put("seq", seq),
            "n": st["n"].at[a].add(jnp.where(w > 0, 1.0, 0.0)),
        }
        return out, None

    rows = (delta["Y"], delta["arm"], delta["s"], delta["w"], delta["t"])
    stats, _ = jax.lax.scan(insert, dict(state.stats), rows)
    return stats


def _pak_accumulate(cfg, h, state, x, arms, r, w, prop, t):
    return _pak_combine(cfg, h, state, _pak_delta(cfg, h, state, x, arms, r, w, prop, t))


def _diag_weights(h, w, present):
    """lam / w for points; 1 for empty slots (they are decoupled, any positive value works)."""
    return jnp.where(present, h["lam"] / jnp.where(present, w, 1.0), 1.0)


def _pak_refresh(cfg, h, stats):
    """M and beta for every arm from its points: a Cholesky of the arm's occupied block."""
    window = cfg["window"]

    def block(P, Y, s, w):
        eye = jnp.eye(window)
        if P == 0:
            return eye, jnp.zeros(window)
        Y, s, w = Y[:P], s[:P], w[:P]
        present = w > 0
        q = _sqnorm(Y)
        K = _kernel(cfg, h, Y @ Y.T, q[:, None], q[None, :]) * (present[:, None] & present[None, :])
        A = K + jnp.diag(_diag_weights(h, w, present))
        L = jnp.linalg.cholesky(A)
        Minv = jax.scipy.linalg.cho_solve((L, True), jnp.eye(P))
        Minv = 0.5 * (Minv + Minv.T)
        beta = Minv @ jnp.where(present, s, 0.0)
        return eye.at[:P, :P].set(Minv), jnp.zeros(window).at[:P].set(beta)

    def arm(args):
        Y, s, w = args
        branches = [partial(block, P) for P in _sizes(window)]
        return jax.lax.switch(_bucket(window, jnp.sum(w > 0)), branches, Y, s, w)

    Minv, beta = jax.lax.map(arm, (stats["Y"], stats["s"], stats["w"]))
    # squared norms of the points: select reads them rather than every point twice
    return {"Minv": Minv, "beta": beta, "ysq": _sqnorm(stats["Y"])}


def _pak_incremental(cfg, h, state, stats, x, arms, w):
    """M after an update from the previous M, for the slots the update rewrote (at most one per
    row): first every point they held is removed (a Schur-complement downdate each), then every
    new point is inserted by block inversion against the points present by then. Both passes
    read only M and the new log, so the update can rewrite the log in place.

    Each step rewrites the arm's whole window-sized block: a size switch here would make XLA copy
    the [N, window, window] buffer through the conditional (~60 ms at 1,000 points, against a few
    ms for the step). Batches of more than max(INCREMENTAL_MAX_ROWS, window / 4) rows rebuild.
    """
    window = cfg["window"]
    if x.shape[0] > max(INCREMENTAL_MAX_ROWS, window // 4):
        return _pak_refresh(cfg, h, stats)
    old, c = state.stats, state.cache
    n_arms = old["w"].shape[0]
    changed = stats["seq"] != old["seq"]
    slots = jnp.nonzero(changed.reshape(-1), size=x.shape[0], fill_value=-1)[0]
    valid = slots >= 0
    arm_of = jnp.where(valid, slots // window, n_arms)  # out of range: dropped by scatters
    slot_of = jnp.maximum(slots, 0) % window
    new_y = stats["Y"][jnp.minimum(arm_of, n_arms - 1), slot_of]
    ysq = c["ysq"].at[arm_of, slot_of].set(_sqnorm(new_y), mode="drop")
    idx = jnp.arange(window)

    def remove(M, a, j):
        hot = idx == j
        # the inverse of the block without row/column j: M - m m^T / m_jj off j, e_j on it
        g = jnp.where(old["w"][a, j] > 0, 1.0 / M[j, j], 0.0)
        m = M[:, j]
        return jnp.where(
            hot[:, None] | hot[None, :], hot[:, None] & hot[None, :], M - g * jnp.outer(m, m)
        )

    def insert(M, a, j):
        hot = idx == j
        y, wn = stats["Y"][a, j], stats["w"][a, j]
        # present now: the arm's points except the rewritten slots not inserted yet (j onwards)
        now = (stats["w"][a] > 0) & ~(changed[a] & (idx >= j))
        yy = y @ y
        v = jnp.where(now, _kernel(cfg, h, stats["Y"][a] @ y, yy, ysq[a]), 0.0)
        u = M @ v  # vanishes on slot j and on every slot that holds no point now
        cs = _kdiag(cfg, y) + h["lam"] / wn - v @ u  # Schur complement of the new point
        col = jnp.where(hot, 1.0 / cs, -u / cs)
        M2 = M + jnp.outer(u, u) / cs
        return jnp.where(hot[None, :], col[:, None], jnp.where(hot[:, None], col[None, :], M2))

    rows = x.shape[0]

    def step(Minv, k):
        # steps 0..rows-1 remove, rows..2 rows-1 insert; one loop, because two loops rewriting
        # Minv in place one after the other make XLA copy it twice (~100 ms at 1,000 points)
        i = k % rows
        a, j = jnp.minimum(arm_of[i], n_arms - 1), slot_of[i]
        M = Minv[a]
        M2 = jax.lax.cond(k < rows, remove, insert, M, a, j)
        return Minv.at[a].set(jnp.where(valid[i], M2, M)), None

    Minv, _ = jax.lax.scan(step, c["Minv"], jnp.arange(2 * rows))

    # beta = M s for the arms touched, in a loop of its own: writing beta in the loop that
    # rewrites Minv in place makes XLA copy all of Minv first (~60 ms at 1,000 points).
    scores = jnp.where(stats["w"] > 0, stats["s"], 0.0)

    def solve(beta, k):
        a = jnp.minimum(arm_of[k], n_arms - 1)
        return beta.at[a].set(jnp.where(valid[k], Minv[a] @ scores[a], beta[a])), None

    beta, _ = jax.lax.scan(solve, c["beta"], jnp.arange(rows))
    return {"Minv": Minv, "beta": beta, "ysq": ysq}


def _pak_scores(cfg, h, state, ctx, keys, mask, t):
    window = cfg["window"]
    st, c = state.stats, state.cache
    count = jnp.sum(st["w"] > 0, axis=1)
    rows, n_arms = ctx.shape[0], count.shape[0]

    def branch(P, ctx):
        if P == 0:
            return jnp.full((rows, n_arms), jnp.inf, ctx.dtype)
        # [N * P, p] rows: one plain matrix product (a batched [1, p] x [p, P] form of the same
        # product is ~15x slower in XLA:CPU at 1,000 points of dimension 512)
        Y = st["Y"][:, :P].reshape(n_arms * P, -1)
        present = (st["w"][:, :P] > 0)[:, :, None]
        M, beta, ysq = c["Minv"][:, :P, :P], c["beta"][:, :P], c["ysq"][:, :P, None]

        def score(x):
            xy = (Y @ x.T).reshape(n_arms, P, -1)
            k = jnp.where(present, _kernel(cfg, h, xy, _sqnorm(x), ysq), 0.0)  # [N, P, rows]
            mu = jnp.einsum("nkr,nk->rn", k, beta)
            q = jnp.einsum("nkr,nkr->rn", k, jnp.einsum("nkl,nlr->nkr", M, k))
            var = jnp.maximum(_kdiag(cfg, x)[:, None] - q, 0.0) / h["lam"]
            return mu + h["alpha"] * jnp.sqrt(var)

        # Bound the [rows, arms, P] temporaries: a 20k-row select at the cap would need GBs.
        return _by_rows(score, ctx, max(1, SELECT_ELEMENTS // (n_arms * P)))

    branches = [partial(branch, P) for P in _sizes(window)]
    scores = jax.lax.switch(_bucket(window, jnp.max(count)), branches, ctx)
    return _unplayed_first(scores, count)


def _window_ok(x) -> bool:
    return positive_int(x) and int(x) <= MAX_WINDOW


PAK_UCB = Family(
    name="pak_ucb",
    doc="PAK-UCB (Hu, Leung, Farnia 2025): exact kernel ridge regression per arm; "
    "UCB = k^T M s + alpha * lam^-1/2 * sqrt(k(y,y) - k^T M k), M = (K + lam I)^-1 over the "
    "arm's latest `window` points; unplayed arms first. Linear kernel = disjoint LinUCB.",
    kind="argmax",
    contextual=True,
    dim_stat="Y",
    per_arm_contexts="no",
    merge="union of point logs: per arm, the latest `window` points by event time t "
    "(equal times: application order); M is rebuilt from the merged log",
    hypers={
        "alpha": Hyper(
            1.0,
            "exploration scale (the paper's eta; spec default range 0.5-2)",
            check=non_negative,
            rule=">= 0",
        ),
        "lam": Hyper(
            1.0, "kernel ridge regularizer (the paper's alpha)", check=positive, rule="> 0"
        ),
        "kernel": Hyper(
            "rbf",
            "'rbf' exp(-|x-y|^2 / (2 bandwidth^2)) or 'linear' x.y; the point log does not "
            "depend on it, so a change keeps the points and rebuilds M",
            static=True,
            check=_kernel_name,
            rule="'rbf' or 'linear'",
            identity=False,
        ),
        "bandwidth": Hyper(
            1.0,
            "RBF bandwidth (a length, not a precision); a change rebuilds M from the log",
            check=positive,
            rule="> 0",
            identity=False,
        ),
        "window": Hyper(
            1000,
            "points kept per arm; past it the oldest point (by event time) is dropped",
            static=True,
            check=_window_ok,
            rule=f"an integer in [1, {MAX_WINDOW}]",
        ),
        "refresh_every": Hyper(
            1024,
            "versions between full rebuilds of M (bounds the drift of the incremental "
            "updates); a rebuild costs O(points^3) per arm (~80 ms per arm at 1,000 points)",
            static=True,
            check=positive_int,
            rule="integer >= 1",
            identity=False,
        ),
    },
    init_stats=_pak_init,
    delta=_pak_delta,
    combine=_pak_combine,
    accumulate=_pak_accumulate,
    refresh=_pak_refresh,
    refresh_incremental=_pak_incremental,
    scores=_pak_scores,
)


# --- RFF-UCB ----------------------------------------------------------------------------------

_M64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15


def _splitmix64(z: np.ndarray) -> np.ndarray:
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def _uniforms(seed: int, stream: int, n: int) -> np.ndarray:
    """n doubles in [0, 1): SplitMix64 outputs at counters 1..n from a start fixed by (seed,
    stream), top 53 bits each. Plain uint64 arithmetic, so any implementation can reproduce it."""
    start = _splitmix64(np.array([(seed * 2 + stream) & _M64], np.uint64))[0]
    i = np.arange(1, n + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = _splitmix64(start + i * np.uint64(_GOLDEN))
    return (z >> np.uint64(11)).astype(np.float64) * 2.0**-53


@cache
def rff_draw(seed: int, n_features: int, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """(W0 [dim, D] ~ N(0, 1), phase [D] ~ U[0, 2 pi)) as a pure function of its arguments.

    W0 is Box-Muller on stream 0 (pairs u1, u2: r cos, then r sin for all pairs), the phase is
    stream 1 times 2 pi. The bandwidth scales W0 at use, so it needs no redraw.
    """
    m = dim * n_features
    pairs = (m + 1) // 2
    u = _uniforms(seed, 0, 2 * pairs)
    r = np.sqrt(-2.0 * np.log1p(-u[:pairs]))  # 1 - u is in (0, 1]
    ang = 2.0 * np.pi * u[pairs:]
    W0 = np.concatenate([r * np.cos(ang), r * np.sin(ang)])[:m].reshape(dim, n_features)
    phase = 2.0 * np.pi * _uniforms(seed, 1, n_features)
    W0.flags.writeable = False
    phase.flags.writeable = False
    return W0, phase


def _phi(y, W0, phase, bandwidth):
    return np.sqrt(2.0 / phase.shape[-1]) * jnp.cos(y @ W0 / bandwidth + phase)


def rff_features(h, cache, y):
    """phi(y) [..., D] from the cache's draw (the kernel's identity) and the bandwidth."""
    # A conditional whose two branches are the same function, so the predicate does not matter:
    # it is a fusion boundary XLA:CPU keeps. Fused into its consumers, cos() would be evaluated
    # once per use, e.g. D/2 times per feature in the packed phi phi^T of a select (5x the
    # whole select at D = 200); an optimization barrier or a copy does not stop that fusion.
    args = (y, cache["W0"], cache["phase"], h["bandwidth"])
    return jax.lax.cond(h["bandwidth"] > 0, _phi, _phi, *args)


def _lin(cfg):
    return {"shared": False, "serving_dtype": cfg["serving_dtype"]}


def _rff_init(cfg, cap, dim):
    D = cfg["n_features"]
    return {
        "G": np.zeros((cap, D, D)),
        "b": np.zeros((cap, D)),
        "n": np.zeros(cap),
        # sum w y per arm: the arm's mean prompt (a diagnostic) and the prompt dimension
        "y": np.zeros((cap, dim)),
    }


def _draw_cache(cfg, dim):
    W0, phase = rff_draw(cfg["seed"], cfg["n_features"], dim)
    return {"W0": jnp.asarray(W0), "phase": jnp.asarray(phase)}


def _rff_refresh(cfg, h, stats):
    return {**linear._refresh(_lin(cfg), h, stats), **_draw_cache(cfg, stats["y"].shape[-1])}


def _rff_incremental(cfg, h, state, stats, x, arms, w):
    phi = rff_features(h, state.cache, x)
    out = linear._incremental(_lin(cfg), h, state, stats, phi, arms, w)
    return {**out, "W0": state.cache["W0"], "phase": state.cache["phase"]}


def _rff_delta(cfg, h, state, x, arms, r, w, prop, t):
    phi = rff_features(h, state.cache, x)
    d = linear._delta(_lin(cfg), h, state, phi, arms, r, w, prop, t)
    return {**d, "y": segment_sum(x * w[:, None], arms, state.meta.active.shape[0])}


def _rff_accumulate(cfg, h, state, x, arms, r, w, prop, t):
    phi = rff_features(h, state.cache, x)
    out = linear._accumulate(_lin(cfg), h, state, phi, arms, r, w, prop, t)
    return {**out, "y": state.stats["y"].at[arms].add(x * w[:, None])}


RFF_PACKED_ROWS = 16  # up to this many rows, linear.moments' packed product (a gather)


def _rff_scores(cfg, h, state, ctx, keys, mask, t):
    phi = rff_features(h, state.cache, ctx)
    if phi.shape[0] <= RFF_PACKED_ROWS:
        mean, var = linear.moments(_lin(cfg), state, phi)
    else:
        # For more rows linear.moments packs phi phi^T from D slices: at D = 256 that program
        # takes seconds to compile and D(D+1)/2 values a row. phi^T A^-1 phi by rows instead.
        dt = jnp.dtype(cfg["serving_dtype"])
        c = state.cache
        Ainv, theta = c["Ainv"].astype(dt), c["theta"].astype(dt)

        def rows(f):
            f = f.astype(dt)
            var = jnp.einsum("bne,be->bn", jnp.einsum("bd,nde->bne", f, Ainv), f)
            return f @ theta.T, jnp.maximum(var, 0.0)

        chunk = max(1, SELECT_ELEMENTS // (Ainv.shape[0] * phi.shape[1]))
        mean, var = _by_rows(rows, phi, chunk)
    ucb = mean + h["alpha"].astype(mean.dtype) * jnp.sqrt(var)
    return _unplayed_first(ucb, state.stats["n"])


def _seed_ok(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and 0 <= x < 2**63


RFF_UCB = Family(
    name="rff_ucb",
    doc="RFF-UCB (Hu, Leung, Farnia 2025): disjoint LinUCB on random Fourier features "
    "phi(y) = sqrt(2/D) cos(y W0/bandwidth + phase) of the prompt, approximating an RBF kernel "
    "per arm; unplayed arms first. The draw is a pure function of (seed, D), so replicas agree.",
    kind="argmax",
    contextual=True,
    dim_stat="y",
    per_arm_contexts="no",
    hypers={
        "alpha": Hyper(
            1.0,
            "exploration scale (the paper's eta; spec default range 0.5-2)",
            check=non_negative,
            rule=">= 0",
        ),
        "lam": Hyper(1.0, "ridge regularizer (the paper's alpha)", check=positive, rule="> 0"),
        "n_features": Hyper(
            256,
            "random features D (spec: 256-1024)",
            static=True,
            check=lambda x: positive_int(x) and float(x) <= MAX_FEATURES,
            rule=f"an integer in [1, {MAX_FEATURES}]",
        ),
        "bandwidth": Hyper(
            1.0,
            "RBF bandwidth sigma (for unit-norm embeddings: the median pairwise distance)",
            check=positive,
            rule="> 0",
        ),
        "seed": Hyper(
            0,
            "seed of the feature draw",
            static=True,
            check=_seed_ok,
            rule="an integer in [0, 2^63)",
        ),
        "refresh_every": linear._COMMON["refresh_every"],
        "serving_dtype": linear._COMMON["serving_dtype"],
    },
    init_stats=_rff_init,
    delta=_rff_delta,
    refresh=_rff_refresh,
    refresh_incremental=_rff_incremental,
    accumulate=_rff_accumulate,
    scores=_rff_scores,
)
