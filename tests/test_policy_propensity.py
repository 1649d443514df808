"""Choice probabilities and logged propensities (DESIGN.md §4, algorithms.md §9.4).

The ε-mixing rule, masks, recompilation under ε changes, empirical choice frequencies against
`probs` for every family, and Thompson-sampling probabilities against exact or independent
numerical values.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from banditd.policies import MC_DRAWS, TRACES, derive_keys, families, make
from banditd.policies.builder import HOST_ROWS
from scipy import integrate
from scipy import stats as sps
from scipy.special import betaln

# Ranked families (lists of k items) have their own tests (test_policy_ranked.py).
SINGLE = sorted(n for n, m in families().items() if not m["ranked"])


def keys(n: int, scope: str) -> np.ndarray:
    return derive_keys(scope, [f"evt-{i}" for i in range(n)])


def select_traces(family: str) -> int:
    """Traces of every select program of a family (the builder may split select into variants)."""
    return sum(v for (f, k), v in TRACES.items() if f == family and k.startswith("select"))


def mixed_reference(scores_row, elig_row, eps):
    """The documented rule: tied argmax arms T get (1-eps)/|T| + eps/|E|, other eligible eps/|E|."""
    E = np.flatnonzero(elig_row)
    top = scores_row[E].max()
    T = E[scores_row[E] == top]
    ref = np.zeros(len(scores_row))
    ref[E] = eps / len(E)
    ref[T] += (1 - eps) / len(T)
    return ref, len(T)


def _linucb_with_ties():
    """Arms 0, 1 trained, 2 retired, 3-5 fresh (exactly tied), slots 6-7 empty."""
    pol = make("linucb", alpha=0.5)
    st = pol.init(6, dim=2)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(10, 2))
    st = pol.update(st, X, rng.integers(0, 3, 10), rng.uniform(size=10))
    return pol, pol.retire_arms(st, [2]), rng.normal(size=(64, 2))


def _ucb_with_ties():
    """Arms 0 and 1 tie on a finite index, arms 3 and 4 tie at +inf (unplayed), 2 is worse."""
    pol = make("ucb1")
    st = pol.init(5)
    st = pol.update(st, None, [0, 0, 1, 1, 2, 2], [1.0, 0.0, 0.0, 1.0, 0.0, 0.0])
    return pol, st, None


@pytest.mark.parametrize("setup", [_linucb_with_ties, _ucb_with_ties], ids=["linucb", "ucb1"])
def test_epsilon_mixing_rule_ties_and_masks(setup):
    pol, st, ctx = setup()
    cap = int(np.shape(st.meta.active)[0])
    active = np.asarray(st.meta.active)
    rng = np.random.default_rng(1)
    rows = 64
    elig = rng.uniform(size=(rows, cap)) < 0.7
    elig[np.arange(rows), rng.integers(0, 2, rows)] = True  # every row keeps an active arm
    max_tied = 0
    for eps in (0.0, 0.05, 0.3, 1.0):
        out = pol.select(st, ctx, keys(rows, f"mix-{eps}"), elig, epsilon=eps)
        for i in range(rows):
            ref, n_tied = mixed_reference(out.scores[i], elig[i] & active, eps)
            max_tied = max(max_tied, n_tied)
            np.testing.assert_allclose(out.probs[i], ref, rtol=1e-12, atol=1e-15)
        assert np.all(out.propensity == out.probs[np.arange(rows), out.arms])
        assert np.all((elig & active)[np.arange(rows), out.arms])
        assert np.all(out.probs[:, ~active] == 0.0)  # retired and empty slots
        np.testing.assert_allclose(out.probs.sum(1), 1.0, rtol=1e-12)
    assert max_tied >= 2  # the cases above really exercise shared argmax mass


@pytest.mark.parametrize("name", SINGLE)
def test_epsilon_is_runtime_no_recompile(name):
    pol = make(name)
    contextual = families()[name]["contextual"]
    st = pol.init(3, dim=2 if contextual else None)
    # More rows than the host fast path takes (small Thompson selects skip XLA), so every
    # family's jitted select runs here.
    rows = HOST_ROWS + 1
    ctx = np.ones((rows, 2)) if contextual else None
    pol.select(st, ctx, keys(rows, "eps"), epsilon=0.0)
    n0 = select_traces(name)
    assert n0 >= 1  # the counter does see this family's select path
    base = pol.select(st, ctx, keys(rows, "eps"), epsilon=0.0).probs
    for eps in (0.01, 0.2, 0.5, 1.0):
        out = pol.select(st, ctx, keys(rows, "eps"), epsilon=eps)
        # every family, deterministic or sampled, mixes its base distribution the same way
        np.testing.assert_allclose(out.probs[:, :3], (1 - eps) * base[:, :3] + eps / 3, atol=1e-12)
    assert select_traces(name) == n0


# --- empirical frequencies over 20k decision keys --------------------------------------------

CASES = [(name, {}) for name in SINGLE] + [
    ("linucb", {"shared": True}),
    ("lin_ts", {"shared": True}),
]
IDS = [name + ("-shared" if h else "") for name, h in CASES]
N_KEYS = 20_000


def _trained(name, hyper):
    """Six arms: trained on a few rows, arm 4 retired; the capacity leaves empty slots."""
    pol = make(name, **hyper)
    contextual = families()[name]["contextual"]
    d = 3
    st = pol.init(6, dim=d if contextual else None)
    rng = np.random.default_rng(3)
    n = 30
    arms = rng.integers(0, 6, n)
    rewards = (rng.uniform(size=n) < 0.2 + 0.1 * arms).astype(float)
    prop = np.full(n, 1 / 6)
    if not contextual:
        ctx, query = None, None
    elif hyper.get("shared"):
        cap = int(np.shape(st.meta.active)[0])
        ctx = rng.normal(size=(n, cap, d))
        query = rng.normal(size=(1, cap, d))
    else:
        ctx = rng.normal(size=(n, d))
        query = rng.normal(size=(1, d))
    st = pol.update(st, ctx, arms, rewards, propensity=prop)
    return pol, pol.retire_arms(st, [4]), query


def _mc_draws(name, hyper, pol):
    """Draws behind a Monte-Carlo probability estimate (0 when the probability is exact)."""
    if families()[name]["propensity"].startswith("Monte Carlo"):
        return MC_DRAWS
    if name == "lin_ts" and hyper.get("shared"):
        return int(pol.hyper["mc_draws"])
    return 0


def _select_many(pol, name, st, ctx, ks, elig, eps):
    """Select for every key; returns (arms, propensity, probs)."""
    if name != "lin_ts":
        out = pol.select(st, ctx, ks, elig, epsilon=eps)
        return out.arms, out.propensity, out.probs
    # LinTS integrates (or Monte-Carlos) its probabilities per row, which costs seconds at 20k
    # rows. One context and one eligible set per group give every row the same distribution, so
    # take probs from the public select on a few rows per group and draw the 20k choices with the
    # un-padded kernel given those base probabilities: the choice itself never reads them (it is
    # the argmax of the posterior draw, or the epsilon coin), so the check stays a real one.
    groups = [np.flatnonzero((elig == e).all(1)) for e in np.unique(elig, axis=0)]
    base0 = np.zeros(elig.shape)
    probs = np.zeros(elig.shape)
    for g in groups:
        head = g[:8]
        sub0 = pol.select(st, ctx[head], ks[head], elig[head], epsilon=0.0).probs
        sub = pol.select(st, ctx[head], ks[head], elig[head], epsilon=eps).probs
        base0[g], probs[g] = sub0[0], sub[0]
    k = pol.kernels
    n = len(ks)
    arms, prop, _, kprobs = k.select(k.h, st, ctx, ks, elig, np.float64(eps), np.zeros(n), base0)
    np.testing.assert_allclose(np.asarray(kprobs), probs, atol=1e-12)
    return np.asarray(arms), np.asarray(prop), probs


@pytest.mark.parametrize(("name", "hyper"), CASES, ids=IDS)
def test_empirical_choice_frequencies_match_probs(name, hyper):
    pol, st, query = _trained(name, hyper)
    eps = 0.1
    half = N_KEYS // 2
    cap = int(np.shape(st.meta.active)[0])
    assert cap > 6  # empty slots exist, so the test covers them
    subset = np.zeros(cap, bool)
    subset[[0, 2, 4, 5]] = True  # arm 4 is retired: eligible but not selectable
    elig = np.ones((N_KEYS, cap), bool)
    elig[half:] = subset
    ctx = None if query is None else np.repeat(query, N_KEYS, 0)
    ks = keys(N_KEYS, f"freq-{name}-{bool(hyper)}")
    arms, prop, all_probs = _select_many(pol, name, st, ctx, ks, elig, eps)
    m = _mc_draws(name, hyper, pol)
    active = np.asarray(st.meta.active)
    for rows in (slice(0, half), slice(half, None)):
        probs = all_probs[rows]
        # one context and one eligible set per group, so every row has the same distribution
        np.testing.assert_allclose(probs, np.broadcast_to(probs[0], probs.shape), atol=1e-12)
        p = probs[0]
        selectable = elig[rows][0] & active
        assert np.all(p[~selectable] == 0.0)
        freq = np.bincount(arms[rows], minlength=cap) / half
        assert np.all(freq[~selectable] == 0.0), freq
        var = p * (1 - p) / half + (p * (1 - p) / m if m else 0.0)
        assert np.all(np.abs(freq - p) <= 4 * np.sqrt(var) + 1e-12), (freq, p)
        assert np.all(prop[rows] == p[arms[rows]])


# --- Thompson-sampling probabilities against exact / independent values ----------------------


def beta_prob_greater(a1: int, b1: int, a2: int, b2: int) -> float:
    """P(X > Y), X ~ Beta(a1, b1), Y ~ Beta(a2, b2), integer a1: an exact finite sum."""
    total = 0.0
    for i in range(a1):
        total += math.exp(
            betaln(a2 + i, b1 + b2) - math.log(b1 + i) - betaln(1 + i, b1) - betaln(a2, b2)
        )
    return total


@pytest.mark.parametrize("counts", [(2, 4, 3, 1), (0, 0, 0, 0), (9, 2, 6, 5), (1, 7, 0, 3)])
def test_two_arm_beta_ts_exact(counts):
    s0, f0, s1, f1 = counts
    pol = make("beta_ts")
    st = pol.update(
        pol.init(2),
        None,
        [0] * (s0 + f0) + [1] * (s1 + f1),
        [1.0] * s0 + [0.0] * f0 + [1.0] * s1 + [0.0] * f1,
    )
    a0, b0, a1, b1 = 1 + s0, 1 + f0, 1 + s1, 1 + f1
    exact = beta_prob_greater(a0, b0, a1, b1)
    # cross-check the closed form by quadrature so the reference itself is trusted
    quad, _ = integrate.quad(lambda x: sps.beta.pdf(x, a0, b0) * sps.beta.cdf(x, a1, b1), 0, 1)
    assert abs(quad - exact) < 1e-8
    probs = pol.select(st, None, keys(1, "two-arm")).probs[0]
    se = math.sqrt(exact * (1 - exact) / MC_DRAWS)
    assert abs(probs[0] - exact) <= 4 * se, (probs, exact)
    assert abs(probs[1] - (1 - exact)) <= 4 * se
    assert np.all(probs[2:] == 0.0)


def test_lints_disjoint_quadrature_vs_numpy_monte_carlo():
    lam, alpha, d = 1.0, 0.7, 3
    rng = np.random.default_rng(5)
    X = rng.normal(size=(40, d))
    arms = rng.integers(0, 4, 40)
    rewards = X @ np.array([0.3, -0.2, 0.1]) + 0.1 * arms + rng.normal(0, 0.3, 40)
    pol = make("lin_ts", alpha=alpha, lam=lam)
    st = pol.update(pol.init(5, dim=d), X, arms, rewards)
    query = rng.normal(size=(3, d))
    elig = np.ones((3, 5), bool)
    elig[2, 1] = False
    out = pol.select(st, query, keys(3, "quad"), elig)

    draws = 400_000
    for row, x in enumerate(query):
        mean, sd = np.zeros(5), np.zeros(5)
        for a in range(5):
            Xa = X[arms == a]
            Ainv = np.linalg.inv(lam * np.eye(d) + Xa.T @ Xa)
            mean[a] = x @ Ainv @ (Xa.T @ rewards[arms == a])
            sd[a] = alpha * math.sqrt(x @ Ainv @ x)
        z = np.random.default_rng(100 + row).standard_normal((draws, 5))
        s = mean + sd * z
        s[:, ~elig[row, :5]] = -np.inf
        p_mc = np.bincount(s.argmax(1), minlength=5) / draws
        se = np.sqrt(p_mc * (1 - p_mc) / draws)
        p = out.probs[row]
        assert np.all(np.abs(p[:5] - p_mc) <= 4 * se + 1e-6), (p, p_mc)
        assert np.all(p[5:] == 0.0)
        assert p.min() >= 0.0 and abs(p.sum() - 1.0) < 1e-9


def _tie_cases():
    rng = np.random.default_rng(6)
    # alpha = 0 LinTS is greedy on the posterior mean: three fresh arms tie at mean 0
    p0 = make("lin_ts", alpha=0.0)
    yield "alpha0", p0, p0.init(3, dim=2), np.ones((1, 2)), [0, 1, 2]
    # an all-zero context gives every arm mean 0 and variance 0, trained or not
    p1 = make("lin_ts")
    st = p1.update(p1.init(4, dim=2), rng.normal(size=(12, 2)), rng.integers(0, 4, 12),
                   rng.uniform(size=12))
    yield "zero-context", p1, st, np.zeros((1, 2)), [0, 1, 2, 3]
    # shared model: arms 1 and 2 carry identical features, and dominate arms 0 and 3
    p2 = make("lin_ts", alpha=0.3, shared=True)
    feats = np.array([[[-1.0, 0.0], [2.0, 1.0], [2.0, 1.0], [-1.0, -1.0]]])
    st = p2.update(p2.init(4, dim=2), np.repeat(feats, 6, 0), [1] * 6, [1.0] * 6)
    yield "shared-identical", p2, st, feats, [1, 2]
    # shared model, alpha = 0, cold start: theta = 0, so every arm's score is exactly 0
    p3 = make("lin_ts", alpha=0.0, shared=True)
    yield "shared-alpha0", p3, p3.init(3, dim=2), rng.normal(size=(1, 4, 2)), [0, 1, 2]


@pytest.mark.parametrize("case", list(_tie_cases()), ids=lambda c: c[0])
def test_sampled_exact_ties_share_mass(case):
    """Exact ties in a Thompson draw (zero posterior variance) must be broken uniformly, as the
    logged probabilities assume; a first-index tie-break would log 1/|T| and always play one."""
    _, pol, st, query, tied = case
    n = 4000
    out = pol.select(st, np.repeat(query, n, 0), keys(n, "ties"))
    p = out.probs[0]
    np.testing.assert_allclose(p[tied], 1.0 / len(tied), atol=0.02)
    np.testing.assert_allclose(p[tied], p[tied[0]], atol=1e-12)  # symmetric by construction
    freq = np.bincount(out.arms, minlength=len(p)) / n
    sd = np.sqrt(p * (1 - p) / n)
    assert np.all(np.abs(freq - p) <= 4 * sd + 1e-12), (freq, p)
    assert np.all(out.propensity == p[out.arms])
