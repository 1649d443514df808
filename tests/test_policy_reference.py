"""Policy math against an independent numpy reference (algorithms.md §1-2, §8).

Every expected value here is computed in numpy from the closed forms in the spec (direct
inverses, sums over raw rewards), never taken from the library. Deterministic quantities must
agree to 1e-9; sampled quantities are checked against the exact posterior distribution.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from banditd.policies import derive_keys, make
from banditd.policies.thompson import gaussian_posterior, nig_posterior
from scipy import stats as sps

TOL = 1e-9


def keys(n: int, scope: str = "ref") -> np.ndarray:
    return derive_keys(scope, [str(i) for i in range(n)])


def close(actual, expected, tol: float = TOL) -> None:
    np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), rtol=tol, atol=tol)


def ks_ok(samples: np.ndarray, cdf) -> None:
    """The sampled scores follow the exact posterior: KS distance under the 0.1% critical value."""
    res = sps.kstest(samples, cdf)
    assert res.statistic < 1.95 / math.sqrt(len(samples)), res


# --- non-contextual Thompson sampling posteriors -------------------------------------------


def test_beta_posterior_counts_and_samples():
    rng = np.random.default_rng(1)
    arms = rng.integers(0, 3, 60)
    rewards = rng.choice([0.0, 1.0, 0.25], 60)  # fractional rewards are pseudo-counts (§1.1 b)
    pol = make("beta_ts", prior_a=2.0, prior_b=0.5)
    st = pol.update(pol.init(4), None, arms, rewards)
    s = np.array([rewards[arms == a].sum() for a in range(4)])
    f = np.array([(1 - rewards[arms == a]).sum() for a in range(4)])
    close(np.asarray(st.stats["s"]), s)
    close(np.asarray(st.stats["f"]), f)
    # The prior is added at read time only, so the draws come from Beta(a0 + s, b0 + f).
    out = pol.select(st, None, keys(4096, "beta"))
    for a in range(3):
        ks_ok(out.scores[:, a], sps.beta(2.0 + s[a], 0.5 + f[a]).cdf)


def test_gaussian_posterior_precision_and_mean():
    rng = np.random.default_rng(2)
    arms = rng.integers(0, 3, 50)
    rewards = rng.normal(0.3, 2.0, 50)
    mu0, lam, nv = 0.4, 2.5, 3.0  # lam is the prior precision 1/tau0^2
    pol = make("gaussian_ts", mu0=mu0, lam=lam, noise_var=nv)
    st = pol.update(pol.init(4), None, arms, rewards)
    n = np.array([(arms == a).sum() for a in range(4)], float)
    S = np.array([rewards[arms == a].sum() for a in range(4)])
    prec = lam + n / nv
    mean = (mu0 * lam + S / nv) / prec
    m, p = gaussian_posterior(pol.kernels.h, st.stats)
    close(p, prec)
    close(m, mean)
    out = pol.select(st, None, keys(4096, "gauss"))
    for a in range(4):  # includes the unplayed arm: the prior N(mu0, 1/lam)
        ks_ok(out.scores[:, a], sps.norm(mean[a], 1 / math.sqrt(prec[a])).cdf)


def _nig_reference(r, mu0, k0, a0, b0):
    n = len(r)
    s1, s2 = r.sum(), (r**2).sum()
    kn = k0 + n
    mun = (k0 * mu0 + s1) / kn
    an = a0 + n / 2
    if n:
        xbar = s1 / n
        ss = ((r - xbar) ** 2).sum()
        bn_form1 = b0 + 0.5 * ss + k0 * n * (xbar - mu0) ** 2 / (2 * kn)
    else:
        bn_form1 = b0
    bn_form2 = b0 + 0.5 * (s2 + k0 * mu0**2 - kn * mun**2)
    return mun, kn, an, bn_form1, bn_form2


@pytest.mark.parametrize("center", [0.0, 5.0])
def test_nig_posterior_both_forms(center):
    rng = np.random.default_rng(3)
    arms = rng.integers(0, 3, 45)
    rewards = rng.normal(5.0, 0.7, 45)
    mu0, k0, a0, b0 = 4.0, 0.5, 2.0, 1.5
    pol = make("nig_ts", mu0=mu0, lam=k0, prior_a=a0, prior_b=b0, center=center)
    st = pol.update(pol.init(4), None, arms, rewards)
    mun, kn, an, bn = (np.asarray(v) for v in nig_posterior(pol.kernels.h, st.stats))
    for a in range(4):
        ref = _nig_reference(rewards[arms == a], mu0, k0, a0, b0)
        # the two algebraic forms of b_n in §1.3 are the same posterior; the library must match both
        close(ref[3], ref[4], 1e-9)
        close([mun[a], kn[a], an[a], bn[a]], ref[:4])
        close(bn[a], ref[4])
    out = pol.select(st, None, keys(4096, "nig"))
    for a in range(4):
        # marginal: Student-t, 2 a_n dof, location mu_n, scale sqrt(b_n / (a_n kappa_n))
        ref = _nig_reference(rewards[arms == a], mu0, k0, a0, b0)
        scale = math.sqrt(ref[3] / (ref[2] * ref[1]))
        ks_ok(out.scores[:, a], sps.t(2 * ref[2], ref[0], scale).cdf)


# --- classic index policies ----------------------------------------------------------------


@pytest.mark.parametrize("alpha", [1.0, 0.5])
def test_ucb1_indices(alpha):
    arms = np.array([0, 0, 1, 0, 1, 2, 2, 2])
    rewards = np.array([1.0, 0.0, 1.0, 1.0, 0.5, 0.0, 0.2, 1.0])
    pol = make("ucb1", alpha=alpha)
    st = pol.update(pol.init(4), None, arms, rewards)  # slot 3 is active and unplayed
    out = pol.select(st, None, keys(1))
    t = len(arms)
    ref = np.full(4, np.inf)
    for a in range(3):
        r = rewards[arms == a]
        ref[a] = r.mean() + alpha * math.sqrt(2 * math.log(t) / len(r))
    close(out.scores[0, :3], ref[:3])
    assert np.isposinf(out.scores[0, 3])
    # the unplayed arm is the unique argmax, so it is played for sure at epsilon 0
    assert out.arms[0] == 3 and out.propensity[0] == 1.0


def test_epsilon_greedy_probabilities():
    eps = 0.3
    pol = make("epsilon_greedy", epsilon=eps)
    arms = np.array([0, 1, 1, 2, 2, 3])
    # arms 0, 1, 2 tie at mean 0.75; binary fractions keep the tie exact in floating point
    rewards = np.array([0.75, 1.0, 0.5, 0.875, 0.625, 0.125])
    st = pol.update(pol.init(5), None, arms, rewards)
    st = pol.retire_arms(st, [4])
    # eligible masks may be narrower than the capacity: missing slots count as ineligible
    elig = np.array([[1, 1, 1, 1, 1], [0, 1, 1, 1, 0], [1, 0, 0, 1, 0]])
    out = pol.select(st, None, keys(3), elig.astype(bool))
    cap = int(np.shape(st.meta.active)[0])
    means = np.array([rewards[arms == a].mean() for a in range(4)])
    for row, e in enumerate(elig):
        E = [a for a in range(4) if e[a]]  # slot 4 is retired, 5..7 empty
        best = max(means[E])
        T = [a for a in E if means[a] == best]
        ref = np.zeros(cap)
        for a in E:
            ref[a] = eps / len(E) + ((1 - eps) / len(T) if a in T else 0.0)
        close(out.probs[row], ref)

    # an unplayed arm comes first (its mean counts as +inf)
    st2 = pol.add_arms(st, 1)  # slot 5, never played
    out2 = pol.select(st2, None, keys(1))
    close(out2.probs[0, 5], (1 - eps) + eps / 5)


def test_exp3_probabilities_and_logged_propensity_update():
    gamma = 0.2
    pol = make("exp3", alpha=gamma)
    st = pol.init(3)
    n = 3
    logw = np.zeros(4)
    rng = np.random.default_rng(4)
    for step in range(12):
        out = pol.select(st, None, keys(1, f"exp3-{step}"))
        z = np.exp(logw[:n] - logw[:n].max())
        ref = np.zeros(4)
        ref[:n] = (1 - gamma) * z / z.sum() + gamma / n
        close(out.probs[0], ref)
        a, p = int(out.arms[0]), float(out.propensity[0])
        close(p, ref[a])
        r = float(rng.uniform())
        # importance-weighted gain with the propensity logged at decision time (§8.3)
        logw[a] += gamma * (r / p) / n
        st = pol.update(st, None, [a], [r], propensity=[p])
        close(np.asarray(st.stats["logw"]), logw)


def test_exp3_automatic_gamma():
    g = 500.0
    pol = make("exp3", horizon=g)
    st = pol.init(5)
    st = pol.update(st, None, [1, 3], [1.0, 0.5], propensity=[0.5, 0.25])
    n = 5
    gamma = min(1.0, math.sqrt(n * math.log(n) / ((math.e - 1) * g)))
    logw = np.zeros(5)
    logw[1] += gamma * (1.0 / 0.5) / n
    logw[3] += gamma * (0.5 / 0.25) / n
    close(np.asarray(st.stats["logw"])[:5], logw)
    out = pol.select(st, None, keys(1))
    z = np.exp(logw - logw.max())
    close(out.probs[0, :5], (1 - gamma) * z / z.sum() + gamma / n)


# --- linear families -----------------------------------------------------------------------


def _disjoint_data(seed=5, n=40, n_arms=5, d=4):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    arms = rng.integers(0, n_arms - 1, n)  # the last arm stays fresh
    rewards = rng.uniform(size=n)
    return X, arms, rewards


def _ridge_ref(X, arms, rewards, a, lam):
    Xa, ra = X[arms == a], rewards[arms == a]
    A = lam * np.eye(X.shape[1]) + Xa.T @ Xa
    Ainv = np.linalg.inv(A)
    return Ainv @ (Xa.T @ ra), Ainv


def test_linucb_disjoint_scores_and_stats():
    alpha, lam = 0.7, 0.5
    X, arms, rewards = _disjoint_data()
    pol = make("linucb", alpha=alpha, lam=lam)
    st = pol.update(pol.init(5, dim=4), X, arms, rewards)
    for a in range(5):
        Xa, ra = X[arms == a], rewards[arms == a]
        close(np.asarray(st.stats["G"])[a], Xa.T @ Xa)
        close(np.asarray(st.stats["b"])[a], Xa.T @ ra)
        close(np.asarray(st.stats["n"])[a], len(ra))
    ctx = np.random.default_rng(6).normal(size=(7, 4))
    out = pol.select(st, ctx, keys(7))
    for a in range(5):
        theta, Ainv = _ridge_ref(X, arms, rewards, a, lam)
        ref = ctx @ theta + alpha * np.sqrt(np.einsum("bd,de,be->b", ctx, Ainv, ctx))
        close(out.scores[:, a], ref)
    # a fresh arm (A = lam I, b = 0) scores alpha |x| / sqrt(lam), also one added later
    close(out.scores[:, 4], alpha * np.linalg.norm(ctx, axis=1) / math.sqrt(lam))
    st2 = pol.add_arms(st, 4)  # 9 arms outgrow the capacity; old arms keep their models
    out2 = pol.select(st2, ctx, keys(7))
    close(
        out2.scores[:, 5:9],
        (alpha * np.linalg.norm(ctx, axis=1) / math.sqrt(lam))[:, None] * np.ones((1, 4)),
    )
    close(out2.scores[:, :5], out.scores[:, :5])


def test_linucb_shared_per_arm_features():
    alpha, lam, d, n_arms = 1.3, 2.0, 3, 4
    rng = np.random.default_rng(7)
    feats = rng.normal(size=(30, n_arms, d))
    played = rng.integers(0, n_arms, 30)
    rewards = rng.uniform(size=30)
    pol = make("linucb", alpha=alpha, lam=lam, shared=True)
    st = pol.update(pol.init(n_arms, dim=d), feats, played, rewards)
    Xp = feats[np.arange(30), played]  # one shared model sees the played arm's features
    A = lam * np.eye(d) + Xp.T @ Xp
    Ainv = np.linalg.inv(A)
    theta = Ainv @ (Xp.T @ rewards)
    q = rng.normal(size=(5, n_arms, d))
    out = pol.select(st, q, keys(5))
    ref = q @ theta + alpha * np.sqrt(np.einsum("bnd,de,bne->bn", q, Ainv, q))
    close(out.scores[:, :n_arms], ref)


def _ainv_from_linucb_scores(st, arm, d, lam):
    """Recover A_arm^-1 from the served scores: the serving path reads the library's cache.

    With alpha = 1 and alpha = 0 on the same state, (s1 - s0)^2 = x^T A^-1 x; the polarization
    identity over e_i and e_i + e_j then gives every entry, whatever layout the cache uses.
    """
    ctx = [np.eye(d)[i] for i in range(d)]
    pairs = [(i, j) for i in range(d) for j in range(i + 1, d)]
    ctx += [np.eye(d)[i] + np.eye(d)[j] for i, j in pairs]
    ctx = np.array(ctx)
    s1 = make("linucb", alpha=1.0, lam=lam).select(st, ctx, keys(len(ctx))).scores[:, arm]
    s0 = make("linucb", alpha=0.0, lam=lam).select(st, ctx, keys(len(ctx))).scores[:, arm]
    q = (s1 - s0) ** 2
    M = np.diag(q[:d])
    for k, (i, j) in enumerate(pairs):
        M[i, j] = M[j, i] = 0.5 * (q[d + k] - q[i] - q[j])
    return M


@pytest.mark.parametrize("refresh_every", [10**6, 7])
def test_sherman_morrison_vs_direct_inverse_vs_library_cache(refresh_every):
    """The served A^-1 after many small updates (the library may maintain it incrementally, with
    periodic refactorization) equals both a numpy Sherman-Morrison chain and a direct inverse."""
    lam, d, n_arms = 0.8, 4, 3
    rng = np.random.default_rng(8)
    X = rng.normal(size=(90, d))
    arms = rng.integers(0, 2, 90)  # arm 2 stays fresh
    r = rng.uniform(size=90)
    pol = make("linucb", lam=lam, refresh_every=refresh_every)
    st = pol.init(n_arms, dim=d)
    Ainv_sm = np.stack([np.eye(d) / lam] * n_arms)
    # one-row updates as a server applies them, then batches in which an arm repeats
    batches = [slice(i, i + 1) for i in range(60)] + [slice(60, 75), slice(75, 90)]
    for sl in batches:
        st = pol.update(st, X[sl], arms[sl], r[sl])
        for x, a in zip(X[sl], arms[sl], strict=True):
            u = Ainv_sm[a] @ x
            Ainv_sm[a] -= np.outer(u, u) / (1 + x @ u)
    for a in range(n_arms):
        Xa = X[arms == a]
        direct = np.linalg.inv(lam * np.eye(d) + Xa.T @ Xa)
        close(Ainv_sm[a], direct)
        close(_ainv_from_linucb_scores(st, a, d, lam), direct)


def test_lints_disjoint_posterior_mean_and_variance():
    lam, alpha = 0.5, 0.6
    X, arms, rewards = _disjoint_data(seed=9)
    ctx = np.random.default_rng(10).normal(size=(1, 4))
    refs = [_ridge_ref(X, arms, rewards, a, lam) for a in range(5)]
    mean = np.array([ctx[0] @ th for th, _ in refs])
    var = np.array([ctx[0] @ Ai @ ctx[0] for _, Ai in refs])

    # alpha = 0 collapses the draw onto the posterior mean theta_a . x exactly
    p0 = make("lin_ts", alpha=0.0, lam=lam)
    st = p0.update(p0.init(5, dim=4), X, arms, rewards)
    close(p0.select(st, ctx, keys(1)).scores[0, :5], mean)

    pol = make("lin_ts", alpha=alpha, lam=lam)
    # two eligible arms: P(a beats j) = Phi((m_a - m_j) / (alpha sqrt(v_a + v_j))), which pins
    # the variances to quadrature accuracy
    for a, j in [(0, 1), (0, 4), (2, 3)]:
        elig = np.zeros(5, bool)
        elig[[a, j]] = True
        out = pol.select(st, ctx, keys(1), elig)
        ref = sps.norm.cdf((mean[a] - mean[j]) / (alpha * math.sqrt(var[a] + var[j])))
        close(out.probs[0, a], ref, 1e-7)
        close(out.probs[0, j], 1 - ref, 1e-7)

    # and the draws themselves are N(mean, alpha^2 var)
    out = pol.select(st, np.repeat(ctx, 4096, 0), keys(4096, "lints"))
    for a in range(5):
        ks_ok(out.scores[:, a], sps.norm(mean[a], alpha * math.sqrt(var[a])).cdf)


def test_lints_shared_posterior():
    lam, alpha, d = 1.5, 0.8, 3
    rng = np.random.default_rng(11)
    feats = rng.normal(size=(20, d, d))
    played = rng.integers(0, d, 20)
    rewards = rng.uniform(size=20)
    Xp = feats[np.arange(20), played]
    A = lam * np.eye(d) + Xp.T @ Xp
    Ainv = np.linalg.inv(A)
    theta = Ainv @ (Xp.T @ rewards)
    # per-arm features = basis vectors, so arm a's score is coordinate a of the theta draw
    basis = np.repeat(np.eye(d)[None], 4096, 0)
    p0 = make("lin_ts", alpha=0.0, lam=lam, shared=True)
    st = p0.update(p0.init(d, dim=d), feats, played, rewards)
    close(p0.select(st, basis[:1], keys(1)).scores[0, :d], theta)
    pol = make("lin_ts", alpha=alpha, lam=lam, shared=True)
    draws = pol.select(st, basis, keys(4096, "shared")).scores[:, :d]
    cov = np.cov(draws.T)
    target = alpha**2 * Ainv
    # sample covariance of n normal draws: SE(C_ij) = sqrt((S_ii S_jj + S_ij^2) / n)
    se = np.sqrt((np.outer(np.diag(target), np.diag(target)) + target**2) / 4096)
    assert np.all(np.abs(cov - target) < 4 * se), (cov, target)
    assert np.all(np.abs(draws.mean(0) - theta) < 4 * np.sqrt(np.diag(target) / 4096))


@pytest.mark.parametrize("family", ["linucb", "lin_ts"])
def test_float32_serving_close_to_float64(family):
    X, arms, rewards = _disjoint_data(seed=12)
    ctx = np.random.default_rng(13).normal(size=(16, 4))
    hyper = {"alpha": 0.0} if family == "lin_ts" else {}  # deterministic scores to compare
    p64 = make(family, **hyper)
    p32 = make(family, serving_dtype="float32", **hyper)
    s64 = p64.update(p64.init(5, dim=4), X, arms, rewards)
    s32 = p32.update(p32.init(5, dim=4), X, arms, rewards)
    # stats stay float64 whatever the serving dtype
    np.testing.assert_array_equal(np.asarray(s32.stats["G"]), np.asarray(s64.stats["G"]))
    o64 = p64.select(s64, ctx, keys(16))
    o32 = p32.select(s32, ctx, keys(16))
    np.testing.assert_allclose(o32.scores[:, :5], o64.scores[:, :5], rtol=1e-4, atol=1e-5)
    # float32 rounding shows, so the scores really came from the float32 cache
    assert np.any(o32.scores[:, :5] != o64.scores[:, :5])
    np.testing.assert_allclose(o32.probs, o64.probs, atol=1e-4)
