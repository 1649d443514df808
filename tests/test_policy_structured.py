"""Diag-LinUCB, PAK-UCB and RFF-UCB against independent numpy references (algorithms.md §3-4).

Expected values come from the spec's closed forms computed in numpy (direct inverses, sums over
the raw rows), never from the library; deterministic quantities agree to 1e-9. The batch ==
sequential, additivity, epsilon and 20k-key frequency checks run for these families in the
generic contract and propensity tests; here are their specific properties: the literal values in
the spec, the exact equivalences (one-hot Diag = LinUCB, linear-kernel PAK = LinUCB), PAK's
sliding window and union merge, the RFF draw, and compile counts.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
import pytest
from banditd.policies import TRACES, derive_keys, families, make, next_pow2
from banditd.policies.diag import dense_moments, sparse_moments
from banditd.policies.kernel import rff_draw, rff_features
from scipy import stats as sps

TOL = 1e-9


def keys(n: int, scope: str = "structured") -> np.ndarray:
    return derive_keys(scope, [str(i) for i in range(n)])


def close(actual, expected, tol: float = TOL) -> None:
    np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), rtol=tol, atol=tol)


def sparse_rows(rng, n: int, dim: int, nnz: int) -> np.ndarray:
    """Cluster-weight contexts: ``nnz`` clusters per row, positive weights summing to 1."""
    x = np.zeros((n, dim))
    for i in range(n):
        idx = rng.choice(dim, nnz, replace=False)
        x[i, idx] = rng.dirichlet(np.ones(nnz))
    return x


# --- Diag-LinUCB ------------------------------------------------------------------------------


def test_diag_hand_computed_two_clusters():
    # one item, two clusters; rows w = (0.6, 0.8) with r = 1, then w = (1, 0) with r = 0
    pol = make("diag_linucb", alpha=0.5, lam=1.0)
    st = pol.update(pol.init(2, dim=2), [[0.6, 0.8], [1.0, 0.0]], [0, 0], [1.0, 0.0])
    close(np.asarray(st.stats["d"])[0], [1.36, 0.64])
    close(np.asarray(st.stats["b"])[0], [0.6, 0.8])
    out = pol.select(st, [[1.0, 0.0], [0.0, 1.0]], keys(2))
    close(out.scores[0, 0], 0.6 / 2.36 + 0.5 * math.sqrt(1 / 2.36))
    close(out.scores[1, 0], 0.8 / 1.64 + 0.5 * math.sqrt(1 / 1.64))
    # the unplayed item reads as the prior d = lam, b = 0
    close(out.scores[:, 1], [0.5, 0.5])


@pytest.mark.parametrize("max_nnz", [4, 0], ids=["gather", "dense"])
def test_diag_sums_and_ucb_vs_numpy(max_nnz):
    alpha, lam, C, n_items = 0.8, 0.7, 12, 5
    rng = np.random.default_rng(1)
    X = sparse_rows(rng, 80, C, 3)
    arms = rng.integers(0, n_items - 1, 80)  # the last item stays unplayed
    r = rng.uniform(size=80)
    pol = make("diag_linucb", alpha=alpha, lam=lam, max_nnz=max_nnz)
    st = pol.update(pol.init(n_items, dim=C), X[:50], arms[:50], r[:50])
    st = pol.update(st, X[50:], arms[50:], r[50:])
    d = np.array([(X[arms == a] ** 2).sum(0) for a in range(n_items)])
    b = np.array([(X[arms == a] * r[arms == a, None]).sum(0) for a in range(n_items)])
    close(np.asarray(st.stats["d"])[:n_items], d)
    close(np.asarray(st.stats["b"])[:n_items], b)

    def ref(q):
        return q @ (b / (lam + d)).T + alpha * np.sqrt((q * q) @ (1 / (lam + d)).T)

    sparse_q = sparse_rows(rng, 7, C, 3)
    close(pol.select(st, sparse_q, keys(7)).scores[:, :n_items], ref(sparse_q))
    # a batch with one row denser than max_nnz is scored by the dense product
    dense_q = np.vstack([sparse_q, rng.uniform(size=(1, C))])
    close(pol.select(st, dense_q, keys(8)).scores[:, :n_items], ref(dense_q))


def test_diag_sparse_form_matches_dense():
    rng = np.random.default_rng(2)
    C = 30
    pol = make("diag_linucb")
    X = sparse_rows(rng, 40, C, 4)
    st = pol.update(pol.init(6, dim=C), X, rng.integers(0, 6, 40), rng.uniform(size=40))
    q = sparse_rows(rng, 5, C, 4)
    idx = np.array([np.flatnonzero(row) for row in q])
    vals = np.take_along_axis(q, idx, axis=1)
    # padding entries (weight 0 on any valid cluster) change nothing
    idx = np.hstack([idx, np.zeros((5, 3), int)])
    vals = np.hstack([vals, np.zeros((5, 3))])
    ms, vs = sparse_moments(st.cache, jnp.asarray(idx), jnp.asarray(vals))
    md, vd = dense_moments(st.cache, jnp.asarray(q))
    close(ms, md, 1e-12)
    close(vs, vd, 1e-12)
    assert np.abs(np.asarray(md)).max() > 0.01  # the comparison is not between zeros


def test_diag_one_hot_contexts_equal_disjoint_linucb():
    rng = np.random.default_rng(3)
    C, n_items, alpha, lam = 6, 4, 1.3, 0.6
    idx = rng.integers(0, C, 60)
    X = np.eye(C)[idx] * rng.uniform(0.5, 2.0, (60, 1))  # one cluster per user, any weight
    arms = rng.integers(0, n_items, 60)
    r = rng.uniform(size=60)
    diag = make("diag_linucb", alpha=alpha, lam=lam)
    lin = make("linucb", alpha=alpha, lam=lam)
    sd = diag.update(diag.init(n_items, dim=C), X, arms, r)
    sl = lin.update(lin.init(n_items, dim=C), X, arms, r)
    q = np.eye(C)[rng.integers(0, C, 9)] * rng.uniform(0.5, 2.0, (9, 1))
    a = diag.select(sd, q, keys(9)).scores[:, :n_items]
    b = lin.select(sl, q, keys(9)).scores[:, :n_items]
    close(a, b, 1e-12)
    # and with several clusters per user they differ: the cross-cluster covariance is dropped
    q2 = sparse_rows(rng, 3, C, 3)
    X2 = sparse_rows(rng, 20, C, 3)
    sd2 = diag.update(sd, X2, arms[:20], r[:20])
    sl2 = lin.update(sl, X2, arms[:20], r[:20])
    gap = diag.select(sd2, q2, keys(3)).scores - lin.select(sl2, q2, keys(3)).scores
    assert np.abs(gap[:, :n_items]).max() > 1e-3


def test_diag_replica_stats_sum():
    """Two writers' stats merge by +: the snapshot sum equals one writer that saw every row."""
    rng = np.random.default_rng(4)
    C = 8
    pol = make("diag_linucb")
    X = sparse_rows(rng, 30, C, 2)
    arms, r = rng.integers(0, 3, 30), rng.uniform(size=30)
    s0 = pol.init(3, dim=C)
    a = pol.update(s0, X[:13], arms[:13], r[:13]).stats
    b = pol.update(s0, X[13:], arms[13:], r[13:]).stats
    both = pol.update(s0, X, arms, r).stats
    for k in both:
        close(np.asarray(a[k]) + np.asarray(b[k]), both[k])


# --- PAK-UCB ----------------------------------------------------------------------------------


def rbf(A, B, bw):
    d2 = ((A[:, None, :] - B[None, :, :]) ** 2).sum(-1)
    return np.exp(-d2 / (2 * bw**2))


def pak_ref(Y, s, q, *, lam, alpha, bw=None, w=None):
    """mu + alpha*sigma by a direct inverse of K + lam W^-1 (W = weights; unit by default)."""
    kern = (lambda A, B: A @ B.T) if bw is None else (lambda A, B: rbf(A, B, bw))
    w = np.ones(len(s)) if w is None else w
    M = np.linalg.inv(kern(Y, Y) + np.diag(lam / w))
    k = kern(q, Y)
    kxx = (q * q).sum(1) if bw is None else np.ones(len(q))
    mu = k @ M @ s
    var = np.maximum(kxx - np.einsum("bi,ij,bj->b", k, M, k), 0.0) / lam
    return mu, np.sqrt(var), M


def test_pak_spec_example_first_inverse():
    """algorithms.md §4.3 #1: after y = 0 then y = 1 (RBF, bandwidth 1, lam 1), M is
    [[0.551, -0.167], [-0.167, 0.551]]; the reference code's missing parentheses give 3.164."""
    pol = make("pak_ucb", lam=1.0, bandwidth=1.0, window=16)
    st = pol.init(2, dim=1)
    st = pol.update(st, [[0.0]], [0], [0.3])
    close(np.asarray(st.cache["Minv"])[0, 0, 0], 0.5)  # 1 / (k(y, y) + lam)
    st = pol.update(st, [[1.0]], [0], [0.9])
    M = np.asarray(st.cache["Minv"])[0, :2, :2]
    np.testing.assert_allclose(M, [[0.551, -0.167], [-0.167, 0.551]], atol=5e-4)
    _, _, ref = pak_ref(
        np.array([[0.0], [1.0]]), np.array([0.3, 0.9]), np.zeros((1, 1)), lam=1.0, alpha=1.0, bw=1.0
    )
    close(M, ref)
    # empty slots stay an identity block, decoupled from the points
    close(np.asarray(st.cache["Minv"])[0, 2:, 2:], np.eye(14))
    close(np.asarray(st.cache["Minv"])[0, :2, 2:], 0.0)


@pytest.mark.parametrize("kernel", ["rbf", "linear"])
def test_pak_mu_sigma_vs_direct_inverse(kernel):
    alpha, lam, bw = 0.7, 0.5, 0.8
    rng = np.random.default_rng(5)
    X = rng.normal(size=(70, 3))
    arms = rng.integers(0, 3, 70)  # arm 3 stays unplayed
    r = rng.uniform(size=70)
    pol = make("pak_ucb", kernel=kernel, alpha=alpha, lam=lam, bandwidth=bw, window=64)
    st = pol.init(4, dim=3)
    for i in range(0, 70, 9):  # several incremental updates
        st = pol.update(st, X[i : i + 9], arms[i : i + 9], r[i : i + 9])
    q = rng.normal(size=(6, 3))
    out = pol.select(st, q, keys(6))
    for a in range(3):
        mu, sigma, _ = pak_ref(
            X[arms == a], r[arms == a], q, lam=lam, alpha=alpha, bw=bw if kernel == "rbf" else None
        )
        close(out.scores[:, a], mu + alpha * sigma)
    # unplayed arms first: the fresh arm is the unique argmax
    assert np.isposinf(out.scores[:, 3]).all()
    close(out.probs[:, 3], 1.0)


def test_pak_linear_kernel_equals_disjoint_linucb():
    """algorithms.md §4.1 key identity: linear kernel PAK-UCB = disjoint LinUCB with lam = the
    paper's alpha; also with fractional observation weights."""
    rng = np.random.default_rng(6)
    X = rng.normal(size=(50, 4))
    arms = np.r_[0, 1, 2, rng.integers(0, 3, 47)]
    r = rng.uniform(size=50)
    w = rng.uniform(0.2, 1.0, 50)
    pak = make("pak_ucb", kernel="linear", alpha=0.9, lam=1.7, window=64)
    lin = make("linucb", alpha=0.9, lam=1.7)
    sp = pak.update(pak.init(3, dim=4), X, arms, r, observed=w)
    sl = lin.update(lin.init(3, dim=4), X, arms, r, observed=w)
    q = rng.normal(size=(8, 4))
    close(pak.select(sp, q, keys(8)).scores[:, :3], lin.select(sl, q, keys(8)).scores[:, :3])


def test_pak_sliding_window_is_a_refit_on_the_last_1000_points():
    rng = np.random.default_rng(7)
    n, bw, lam, alpha = 1150, 0.6, 1.0, 1.0
    X = rng.uniform(-1, 1, (n, 2))
    r = np.sin(3 * X[:, 0]) + rng.normal(0, 0.1, n)
    pol = make("pak_ucb", bandwidth=bw, refresh_every=10**6)  # the default cap of 1,000
    st = pol.init(2, dim=2)
    arms = np.zeros(n, int)
    # one large batch (a rebuild), then small batches across the cap (downdates in place)
    st = pol.update(st, X[:950], arms[:950], r[:950])
    for i in range(950, n, 50):
        st = pol.update(st, X[i : i + 50], arms[i : i + 50], r[i : i + 50])
    kept = np.asarray(st.stats["Y"])[0]
    assert (np.asarray(st.stats["w"])[0] > 0).sum() == 1000
    order = np.argsort(np.asarray(st.stats["seq"])[0])
    np.testing.assert_array_equal(kept[order], X[n - 1000 :])  # the oldest 150 were evicted
    q = rng.uniform(-1, 1, (5, 2))
    mu, sigma, M = pak_ref(X[n - 1000 :], r[n - 1000 :], q, lam=lam, alpha=alpha, bw=bw)
    close(pol.select(st, q, keys(5)).scores[:, 0], mu + alpha * sigma)
    # the incrementally maintained M equals a rebuild from the log (up to the slot order)
    rebuilt = pol.kernels.refresh(pol.kernels.h, st.stats)
    close(st.cache["Minv"][0], rebuilt["Minv"][0])
    close(np.asarray(st.cache["Minv"])[0][np.ix_(order, order)], M)


def test_pak_window_keeps_latest_by_event_time_and_logs_merge_by_union():
    """Replicas' point logs merge by union; with distinct event times the window holds the
    latest points of the union whatever the order the logs are applied in."""
    rng = np.random.default_rng(8)
    W = 8
    pol = make("pak_ucb", window=W, bandwidth=0.7)
    k = pol.kernels
    st0 = pol.init(2, dim=2)
    X = rng.normal(size=(21, 2))
    r = rng.uniform(size=21)
    t = rng.permutation(21).astype(float)  # distinct event times, shuffled across replicas
    arms = np.zeros(21, int)
    arms[20] = 1

    def log(sl):
        ones = np.ones(len(X[sl]))
        return k.delta(
            k.h,
            st0,
            jnp.asarray(X[sl]),
            jnp.asarray(arms[sl]),
            jnp.asarray(r[sl]),
            jnp.asarray(ones),
            jnp.asarray(ones),
            jnp.asarray(t[sl]),
        )

    a_log, b_log = log(slice(0, 11)), log(slice(11, 21))
    ab = k.apply(k.h, k.apply(k.h, st0, a_log), b_log)
    ba = k.apply(k.h, k.apply(k.h, st0, b_log), a_log)
    arm0 = np.flatnonzero(arms == 0)
    latest = arm0[np.argsort(t[arm0])[-W:]]
    for st in (ab, ba):
        kept_t = np.sort(np.asarray(st.stats["t"])[0])
        np.testing.assert_array_equal(kept_t, np.sort(t[latest]))
        assert int(np.asarray(st.stats["n"])[0]) == 20  # every point was received
    q = rng.normal(size=(4, 2))
    sab, sba = pol.select(ab, q, keys(4)).scores, pol.select(ba, q, keys(4)).scores
    close(sab, sba)
    mu, sigma, _ = pak_ref(X[latest], r[latest], q, lam=1.0, alpha=1.0, bw=0.7)
    close(sab[:, 0], mu + sigma)
    # a point older than every point of a full window is dropped, not swapped in
    stale = k.apply(k.h, ab, {**log(slice(0, 1)), "t": jnp.asarray([-5.0])})
    np.testing.assert_array_equal(np.asarray(stale.stats["t"]), np.asarray(ab.stats["t"]))
    assert int(np.asarray(stale.stats["n"])[0]) == 21
    # the public update (event times from `t`) agrees with the merged logs
    one = pol.update(st0, X, arms, r, t=t)
    np.testing.assert_array_equal(np.sort(np.asarray(one.stats["t"])[0]), np.sort(t[latest]))


def test_pak_batch_equals_sequential_across_the_cap():
    rng = np.random.default_rng(9)
    pol = make("pak_ucb", window=8, bandwidth=0.9)
    X = rng.normal(size=(40, 3))
    arms, r = rng.integers(0, 2, 40), rng.uniform(size=40)
    batch = pol.update(pol.init(3, dim=3), X, arms, r)
    seq = pol.init(3, dim=3)
    for i in range(40):
        seq = pol.update(seq, X[i : i + 1], arms[i : i + 1], r[i : i + 1])
    for key in batch.stats:
        close(batch.stats[key], seq.stats[key])
    for key in batch.cache:
        close(batch.cache[key], seq.cache[key])
    assert (np.asarray(batch.stats["n"])[:2] > 8).all()  # both arms went past the window


def test_pak_incremental_drift_stays_small():
    """Hundreds of downdate + insert steps with no rebuild keep M equal to a fresh inverse."""
    rng = np.random.default_rng(10)
    pol = make("pak_ucb", window=16, bandwidth=0.5, refresh_every=10**6)
    st = pol.init(1, dim=2)
    X = rng.normal(size=(600, 2)) * 0.3  # close points: K is far from diagonal
    r = rng.uniform(size=600)
    for i in range(600):
        st = pol.update(st, X[i : i + 1], [0], r[i : i + 1])
    rebuilt = pol.kernels.refresh(pol.kernels.h, st.stats)
    close(st.cache["Minv"], rebuilt["Minv"])
    close(st.cache["beta"], rebuilt["beta"])


# --- RFF-UCB ----------------------------------------------------------------------------------


def _splitmix64_py(z: int) -> int:
    m = (1 << 64) - 1
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & m
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & m
    return z ^ (z >> 31)


def _uniforms_py(seed: int, stream: int, n: int) -> list[float]:
    m = (1 << 64) - 1
    start = _splitmix64_py((seed * 2 + stream) & m)
    return [
        (_splitmix64_py((start + i * 0x9E3779B97F4A7C15) & m) >> 11) * 2.0**-53
        for i in range(1, n + 1)
    ]


def test_rff_draw_follows_its_definition():
    """The draw is a pure function of (seed, D, dim), reproduced here in plain Python integers
    and math (SplitMix64 + Box-Muller), so any replica or language can compute it."""
    seed, D, p = 12345, 5, 3
    W0, phase = rff_draw(seed, D, p)
    m = D * p
    pairs = (m + 1) // 2
    u = _uniforms_py(seed, 0, 2 * pairs)
    rad = [math.sqrt(-2 * math.log(1 - x)) for x in u[:pairs]]
    z = [rad[i] * math.cos(2 * math.pi * u[pairs + i]) for i in range(pairs)]
    z += [rad[i] * math.sin(2 * math.pi * u[pairs + i]) for i in range(pairs)]
    close(W0, np.array(z[:m]).reshape(p, D), 1e-14)
    close(phase, 2 * math.pi * np.array(_uniforms_py(seed, 1, D)), 1e-14)
    np.testing.assert_array_equal(rff_draw(seed, D, p)[0], W0)
    assert not np.allclose(rff_draw(seed + 1, D, p)[0], W0)


def test_rff_draw_distribution():
    W0, phase = rff_draw(3, 20000, 1)
    assert sps.kstest(W0.ravel(), "norm").pvalue > 1e-3
    assert sps.kstest(phase, sps.uniform(0, 2 * np.pi).cdf).pvalue > 1e-3


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rff_kernel_approximation_at_large_d(seed):
    """algorithms.md §4.2: with D = 20000 and sigma = 1, phi(0).phi(1) ~ exp(-1/2) = 0.6065.

    phi(0).phi(1) = (1/D) sum_i [cos(w_i) + cos(w_i + 2 b_i)], w ~ N(0, 1), b ~ U[0, 2 pi): mean
    exp(-1/2), per-term variance (1 + e^-2)/2 - e^-1 + 1/2. A map without the 1/sqrt(D) factor
    (the reference code's '2D' variant) would be ~D times larger.
    """
    D = 20000
    W0, phase = rff_draw(seed, D, 1)
    cache = {"W0": jnp.asarray(W0), "phase": jnp.asarray(phase)}
    phi = np.asarray(
        rff_features({"bandwidth": jnp.asarray(1.0)}, cache, jnp.array([[0.0], [1.0]]))
    )
    exact = math.exp(-0.5)
    se = math.sqrt(((1 + math.exp(-2)) / 2 - math.exp(-1) + 0.5) / D)
    assert abs(phi[0] @ phi[1] - exact) < 4 * se, (phi[0] @ phi[1], exact)
    # phi(y).phi(y) = 1 + (1/D) sum cos(2 w y + 2 b): mean 1, sd sqrt(1 / (2 D))
    assert abs(phi[0] @ phi[0] - 1.0) < 4 * math.sqrt(0.5 / D)


def test_rff_features_stats_and_scores_vs_numpy():
    alpha, lam, bw, D, p = 0.6, 0.9, 0.7, 24, 3
    rng = np.random.default_rng(11)
    X = rng.normal(size=(40, p))
    arms = rng.integers(0, 3, 40)  # arm 3 stays unplayed
    r = rng.uniform(size=40)
    pol = make("rff_ucb", alpha=alpha, lam=lam, bandwidth=bw, n_features=D, seed=7)
    st = pol.init(4, dim=p)
    W0, phase = rff_draw(7, D, p)

    def phi(Y):
        return np.sqrt(2.0 / D) * np.cos(Y @ W0 / bw + phase)

    close(rff_features(pol.kernels.h, st.cache, jnp.asarray(X)), phi(X), 1e-12)
    # the first observation counts once (§4.3 #2: the reference code doubles it)
    st1 = pol.update(st, X[:1], arms[:1], r[:1])
    close(np.asarray(st1.stats["b"])[arms[0]], r[0] * phi(X[:1])[0])
    for i in range(0, 40, 7):
        st = pol.update(st, X[i : i + 7], arms[i : i + 7], r[i : i + 7])
    q = rng.normal(size=(20, p))
    # a few rows take linear.moments' packed product, many rows a per-row product
    few, many = pol.select(st, q[:5], keys(5)).scores, pol.select(st, q, keys(20)).scores
    F, Fq = phi(X), phi(q)
    for a in range(3):
        Fa, ra = F[arms == a], r[arms == a]
        close(np.asarray(st.stats["G"])[a], Fa.T @ Fa)
        close(np.asarray(st.stats["y"])[a], X[arms == a].sum(0))
        Ainv = np.linalg.inv(lam * np.eye(D) + Fa.T @ Fa)
        ref = Fq @ Ainv @ (Fa.T @ ra) + alpha * np.sqrt(np.einsum("bi,ij,bj->b", Fq, Ainv, Fq))
        close(many[:, a], ref)
        close(few[:, a], ref[:5])
    assert np.isposinf(many[:, 3]).all() and np.isposinf(few[:, 3]).all()


def test_rff_identity_hyperparameters():
    hp = families()["rff_ucb"]["hyperparameters"]
    assert hp["seed"]["identity"] and hp["n_features"]["identity"] and hp["bandwidth"]["identity"]
    # different seeds serve different features: the seed really is part of the model
    a = make("rff_ucb", seed=1, n_features=8).init(1, dim=2).cache["W0"]
    b = make("rff_ucb", seed=2, n_features=8).init(1, dim=2).cache["W0"]
    assert not np.allclose(np.asarray(a), np.asarray(b))


def test_pak_merge_rule_is_declared():
    fams = families()
    assert fams["pak_ucb"]["merge"].startswith("union of point logs")
    assert fams["diag_linucb"]["merge"] == "sum" and fams["rff_ucb"]["merge"] == "sum"


# --- compile counts -----------------------------------------------------------------------------


def _traces(family: str) -> int:
    return sum(v for (f, k), v in TRACES.items() if f == family and k.startswith("select"))


@pytest.mark.parametrize(
    ("family", "hyper", "dim"),
    [
        # a static value no other test uses gives each case its own, untraced programs
        ("diag_linucb", {"max_nnz": 5}, 12),
        ("pak_ucb", {"window": 24}, 3),
        ("rff_ucb", {"n_features": 24}, 3),
    ],
)
def test_select_compiles_once_per_bucket_and_capacity(family, hyper, dim):
    rng = np.random.default_rng(12)
    pol = make(family, **hyper)
    st = pol.init(3, dim=dim)
    st = pol.update(st, rng.uniform(size=(6, dim)), rng.integers(0, 3, 6), rng.uniform(size=6))
    add_at = {10, 25}
    before = _traces(family)
    seen: set[tuple[int, int]] = set()
    for i in range(40):
        if i in add_at:
            st = pol.add_arms(st, 3)
        b = int(rng.integers(1, 17))
        seen.add((next_pow2(b), int(np.shape(st.meta.active)[0])))
        ks = rng.integers(0, 2**32, size=(b, 2), dtype=np.uint32)
        out = pol.select(st, rng.uniform(size=(b, dim)), ks, epsilon=0.1)
        assert out.arms.shape == (b,)
    caps = {c for _, c in seen}
    assert len(caps) >= 2  # the arm additions did grow the capacity
    assert _traces(family) - before == len(seen)


# --- environments -------------------------------------------------------------------------------


def test_prompt_routing_means_are_even_bumps():
    from banditd import sim

    env = sim.prompt_routing(3, 2, seed=4, bumps=4, width=0.3, sd=0.2)
    assert (env.n_arms, env.dim, env.per_arm, env.reward_kind) == (3, 2, False, "real")
    real = sim.realize(env, 3000, seed=1)
    y = real.contexts
    assert y.shape == (3000, 2) and np.abs(y).max() <= 1.0
    c, hgt = np.asarray(env.centers), np.asarray(env.heights)
    d2 = ((y[:, None, None, :] - c[None]) ** 2).sum(-1)
    close(real.means, (hgt * np.exp(-d2 / (2 * 0.3**2))).sum(-1), 1e-12)
    # every bump has its twin at -c: the means are even functions of the prompt
    close(
        np.asarray(jnp.stack([env.means_at(jnp.asarray(v)) for v in -y[:20]])),
        real.means[:20],
        1e-12,
    )
    resid = real.rewards - real.means
    assert abs(resid.std() - 0.2) < 0.02 and abs(resid.mean()) < 0.02
    # the best arm changes with the prompt (else routing would be trivial)
    assert len(np.unique(real.means.argmax(1))) == 3
    with pytest.raises(ValueError, match="bumps"):
        sim.prompt_routing(bumps=3)


def test_cluster_matching_contexts_are_top_k_softmax_weights():
    from banditd import sim

    env = sim.cluster_matching(6, 15, seed=2, k=3, tau=0.1)
    assert (env.n_arms, env.dim, env.reward_kind) == (6, 15, "binary")
    real = sim.realize(env, 2000, seed=3)
    w = real.contexts
    assert ((w > 0).sum(1) == 3).all()
    close(w.sum(1), 1.0, 1e-12)
    close(real.means, w @ np.asarray(env.theta).T, 1e-12)
    assert set(np.unique(real.rewards)) <= {0.0, 1.0}
    # the non-zero clusters are the user's nearest: the weights follow the similarity order
    assert len({tuple(np.flatnonzero(row)) for row in w}) > 20
