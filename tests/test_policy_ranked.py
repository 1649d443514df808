"""Ranked families (cascades and slates; algorithms.md §5-§6) against independent references.

Every expected value is computed here with numpy/scipy from the spec's closed forms (direct
inverses, brentq roots, brute-force Monte Carlo, hand counts), never taken from the library.
Deterministic quantities agree to 1e-9; sampled ones are tested at 4 sigma, where sigma adds
the Monte Carlo error of the library's own estimate (mc_draws lists) to the binomial error.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from banditd.policies import TRACES, families, make, next_pow2
from banditd.policies.rank_probs import BetaRank
from banditd.policies.slate import inslate_merge
from scipy import optimize
from scipy import stats as sps
from scipy.special import xlogy

TOL = 1e-9
N_KEYS = 20_000  # decisions per sampled check (one batched select, one compiled bucket)
RANKED = sorted(n for n, m in families().items() if m["ranked"])
N_ITEMS, K, D = 6, 3, 3
PBM_KAPPA = [1.0, 0.6, 0.4]
HYPER: dict[str, dict] = {"slate_pbm_ts": {"kappa": PBM_KAPPA, "positions": 3}}
# Per-item features (the same in every row): items 1 and 4 are identical, so any linear index
# ties them exactly; the constant column keeps every item away from the origin.
ITEM_X = np.array(
    [
        [1.0, 0.8, -0.3],
        [1.0, 0.1, 0.6],
        [1.0, -0.7, 0.2],
        [1.0, 0.4, -0.9],
        [1.0, 0.1, 0.6],
        [1.0, -0.2, -0.4],
    ]
)
# The same with item 4 moved off item 1: no exact ties in any linear score.
X_DISTINCT = ITEM_X + np.array([0.0, 0.4, -0.1]) * (np.arange(N_ITEMS) == 4)[:, None]
ATTRACT = np.array([0.15, 0.5, 0.25, 0.35, 0.55, 0.3])


def rkeys(n: int, seed: int) -> np.ndarray:
    """n distinct uint32 [n, 2] decision keys."""
    return np.asarray(jax.random.split(jax.random.PRNGKey(seed), n), np.uint32)


def close(actual, expected, tol: float = TOL) -> None:
    np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), rtol=tol, atol=tol)


def contextual(name: str) -> bool:
    return families()[name]["contextual"]


def ctx_rows(name: str, rows: int, x: np.ndarray = ITEM_X) -> np.ndarray | None:
    return np.repeat(x[None], rows, 0) if contextual(name) else None


def new_policy(name: str, n: int = N_ITEMS, **hyper):
    pol = make(name, **{**HYPER.get(name, {}), **hyper})
    return pol, pol.init(n, dim=D if contextual(name) else None)


def sim_rows(name: str, rows: int, seed: int, k: int = K):
    """Random lists of k of the six items and their clicks: the first attractive item for a
    cascade (later slots 0), independent PBM clicks kappa_j * attraction for slates."""
    rng = np.random.default_rng(seed)
    arms = np.argsort(rng.uniform(size=(rows, N_ITEMS)), axis=1)[:, :k]
    p = ATTRACT[arms]
    if name == "slate_pbm_ts":
        p = p * np.asarray(PBM_KAPPA[:k])[None, :]
    clicks = (rng.uniform(size=(rows, k)) < p).astype(float)
    if name.startswith("cascade_"):
        first = np.cumsum(clicks, axis=1) - clicks
        clicks = np.where(first == 0, clicks, 0.0)
    return ctx_rows(name, rows), arms, clicks


def stats_np(st) -> dict[str, np.ndarray]:
    return {k: np.asarray(v) for k, v in st.stats.items()}


# --- numpy references ------------------------------------------------------------------------


def cascade_reference(arms, clicks, cap, x=None):
    """n, c, rounds (and G, b over the examined slots) by walking each list top-down."""
    n, c, rounds = np.zeros(cap), np.zeros(cap), 0.0
    G, b = (np.zeros((x.shape[1], x.shape[1])), np.zeros(x.shape[1])) if x is not None else (0, 0)
    for row, r in zip(arms, clicks, strict=True):
        rounds += 1.0
        for item, click in zip(row, r, strict=True):
            n[item] += 1.0
            c[item] += click
            if x is not None:
                G = G + np.outer(x[item], x[item])
                b = b + x[item] * click
            if click > 0:
                break  # the user stopped: later slots were never examined
    out = {"n": n, "c": c, "rounds": np.float64(rounds)}
    if x is not None:
        out.update(G=G, b=b)
    return out


def bernoulli_kl(p: float, q: float) -> float:
    return xlogy(p, p) - xlogy(p, q) + xlogy(1 - p, 1 - p) - xlogy(1 - p, 1 - q)


def klucb_reference(w: float, n: float, t: float) -> float:
    if n == 0:
        return math.inf
    lt = math.log(t)
    thr = lt + 3.0 * (max(0.0, math.log(lt)) if lt > 0 else 0.0)
    if w >= 1.0:
        return 1.0
    if thr == 0.0:
        return w
    hi = 1.0 - 1e-15
    f = lambda q: n * bernoulli_kl(w, q) - thr  # noqa: E731
    if f(hi) <= 0.0:
        return 1.0
    return optimize.brentq(f, w, hi, xtol=1e-15, rtol=1e-15, maxiter=500)


# --- 1. numpy references on hand-computed states ---------------------------------------------


@pytest.mark.parametrize("name", ["cascade_ucb1", "cascade_linucb"])
def test_cascade_update_examined_slots_only(name):
    pol, st = new_policy(name)
    ctx = ctx_rows(name, 1)
    # click at slot 2 of 3: slots 1-2 observed, slot 3 (item 4) never examined
    s1 = stats_np(pol.update(st, ctx, [[2, 0, 4]], [[0.0, 1.0, 0.0]]))
    n, c = np.zeros(8), np.zeros(8)
    n[[2, 0]] = 1.0
    c[0] = 1.0
    close(s1["n"], n)
    close(s1["c"], c)
    assert s1["rounds"] == 1.0
    # no click: every slot observed with 0
    s2 = stats_np(pol.update(st, ctx, [[1, 3, 5]], [[0.0, 0.0, 0.0]]))
    n2 = np.zeros(8)
    n2[[1, 3, 5]] = 1.0
    close(s2["n"], n2)
    close(s2["c"], np.zeros(8))
    assert s2["rounds"] == 1.0
    # a click at slot 1 hides the later "clicks"; an explicit observed mask overrides the rule
    s3 = stats_np(pol.update(st, ctx, [[1, 3, 5]], [[1.0, 0.0, 1.0]]))
    assert s3["n"][1] == 1.0 and s3["c"][1] == 1.0 and s3["n"][[3, 5]].sum() == 0.0
    s4 = stats_np(pol.update(st, ctx, [[1, 3, 5]], [[0.0, 0.0, 0.0]], observed=[[1.0, 0.0, 0.0]]))
    assert s4["n"][1] == 1.0 and s4["n"].sum() == 1.0
    if name == "cascade_linucb":
        x = ITEM_X
        close(s1["G"], np.outer(x[2], x[2]) + np.outer(x[0], x[0]))
        close(s1["b"], x[0])
        close(s2["G"], sum(np.outer(x[i], x[i]) for i in (1, 3, 5)))
        close(s2["b"], np.zeros(D))
        close(s4["G"], np.outer(x[1], x[1]))


def test_cascade_ucb1_indices():
    c_explore = 0.7
    pol, st = new_policy("cascade_ucb1", c_explore=c_explore)
    rng = np.random.default_rng(1)
    arms = np.argsort(rng.uniform(size=(9, 5)), axis=1)[:, :K]  # item 5 is never shown
    clicks = (rng.uniform(size=(9, K)) < 0.4).astype(float)  # later clicks must be ignored
    st = pol.update(st, None, arms, clicks)
    ref = cascade_reference(arms, clicks, 8)
    s = stats_np(st)
    for key in ("n", "c", "rounds"):
        close(s[key], ref[key])
    n, c, t = ref["n"][:N_ITEMS], ref["c"][:N_ITEMS], 1.0 + ref["rounds"]
    assert n[5] == 0 and (n[:5] > 0).all()
    with np.errstate(divide="ignore", invalid="ignore"):
        u = np.where(n > 0, c / n + np.sqrt(c_explore * np.log(t) / n), np.inf)
    out = pol.select(st, None, rkeys(4, 0), k=K)
    for row in out.scores:
        close(row[:N_ITEMS], u)
    assert (out.arms[:, 0] == 5).all()  # unexamined first
    assert u.max(initial=0, where=np.isfinite(u)) > 1.0  # the index is not clipped at 1


@pytest.mark.parametrize("t", [1.0, 2.0, 3.0, 50.0, 1000.0])
def test_cascade_klucb_indices_vs_brentq(t):
    pol, st = new_policy("cascade_klucb")
    # (clicks, examined): interior w, w = 0 (closed form), w = 1, n = 0, a single look, many
    cn = [(3, 10), (0, 5), (4, 4), (0, 0), (1, 1), (45, 50)]
    c = np.zeros(8)
    n = np.zeros(8)
    c[:6], n[:6] = np.array(cn, float).T
    st = st._replace(
        stats={"n": jnp.asarray(n), "c": jnp.asarray(c), "rounds": jnp.asarray(t - 1.0)}
    )
    out = pol.select(st, None, rkeys(2, 1), k=K)
    ref = np.array([klucb_reference(ci / ni if ni else 0.0, ni, t) for ci, ni in cn])
    # t = 1 (a hand-made state: n > 0 with no round) makes the threshold 0, so U = w; there the
    # bisection can only resolve KL(w || q) <= 0 down to the rounding of KL, ~sqrt(eps) in q
    tol = TOL if t > 1 else 1e-7
    for row in out.scores:
        close(row[:6], ref, tol)
    lt = math.log(t)
    thr = lt + 3 * max(0.0, math.log(lt)) if lt > 0 else 0.0
    close(ref[1], 1.0 - math.exp(-thr / 5))  # the closed form at w = 0 agrees with the root
    assert ref[2] == 1.0 and ref[3] == math.inf


def test_cascade_linucb_cache_and_scores():
    lam, sigma, c_explore = 0.7, 1.3, 0.4
    pol, st = new_policy("cascade_linucb", lam=lam, sigma=sigma, c_explore=c_explore)
    ctx, arms, clicks = sim_rows("cascade_linucb", 40, seed=2)
    st = pol.update(st, ctx, arms, clicks)
    ref = cascade_reference(arms, clicks, 8, ITEM_X)
    s = stats_np(st)
    for key in ("G", "b", "n", "c", "rounds"):
        close(s[key], ref[key])  # raw sums: no lambda, no sigma
    M = lam * np.eye(D) + ref["G"] / sigma**2
    Minv = np.linalg.inv(M)
    theta = Minv @ ref["b"] / sigma**2
    close(st.cache["Minv"], Minv)
    close(st.cache["theta"], theta)
    query = np.random.default_rng(3).normal(size=(N_ITEMS, D)) * 2.0
    out = pol.select(st, ctx_rows("cascade_linucb", 3, query), rkeys(3, 2), k=K)
    u = np.minimum(
        query @ theta + c_explore * np.sqrt(np.einsum("nd,de,ne->n", query, Minv, query)), 1
    )
    assert (u == 1.0).any() and (u < 1.0).any()  # both branches of the clip are exercised
    for row in out.scores:
        close(row[:N_ITEMS], u)


def test_cascade_lints_draws_follow_posterior():
    lam, sigma, v = 1.5, 0.8, 0.6
    pol, st = new_policy("cascade_lints", lam=lam, sigma=sigma, v=v)
    ctx, arms, clicks = sim_rows("cascade_lints", 40, seed=4)
    st = pol.update(st, ctx, arms, clicks)
    ref = cascade_reference(arms, clicks, 8, ITEM_X)
    M = lam * np.eye(D) + ref["G"] / sigma**2
    Minv = np.linalg.inv(M)
    theta = Minv @ ref["b"] / sigma**2
    close(st.cache["theta"], theta)
    close(st.cache["Minv"], Minv)
    n = N_KEYS
    out = pol.select(st, ctx_rows("cascade_lints", n), rkeys(n, 3), k=K)
    # scores = X theta~; X has full column rank, so theta~ is recovered exactly
    draws = np.linalg.lstsq(ITEM_X, out.scores[:, :N_ITEMS].T, rcond=None)[0].T
    white = (draws - theta) @ np.linalg.cholesky(M) / v  # L^T (draw - mean) / v ~ N(0, I)
    assert np.all(np.abs(white.mean(0)) < 4 / math.sqrt(n)), white.mean(0)
    assert np.all(np.abs(np.cov(white.T) - np.eye(D)) < 0.05), np.cov(white.T)


def test_cascade_ts_draws_follow_beta_posterior():
    pol, st = new_policy("cascade_ts", prior_a=2.0, prior_b=0.5)
    _, arms, clicks = sim_rows("cascade_ts", 30, seed=5)
    st = pol.update(st, None, arms, clicks)
    ref = cascade_reference(arms, clicks, 8)
    out = pol.select(st, None, rkeys(N_KEYS, 4), k=K)
    for i in range(N_ITEMS):
        dist = sps.beta(2.0 + ref["c"][i], 0.5 + ref["n"][i] - ref["c"][i])
        res = sps.kstest(out.scores[:, i], dist.cdf)
        assert res.statistic < 1.95 / math.sqrt(N_KEYS), (i, res)


def test_pbm_posterior_with_configured_kappa():
    kappa = np.array(PBM_KAPPA)
    pol, st = new_policy("slate_pbm_ts", prior_a=1.5, prior_b=2.0)
    rng = np.random.default_rng(6)
    arms = np.argsort(rng.uniform(size=(30, N_ITEMS)), axis=1)[:, :K]
    clicks = (rng.uniform(size=(30, K)) < 0.4).astype(float)
    # item 5 only ever in slot 3 and always clicked: kappa-weighted views < clicks, so max(.,0)
    arms = np.vstack([arms[np.all(arms != 5, axis=1)], [[0, 1, 5]] * 3])
    clicks = np.vstack([clicks[: len(arms) - 3], [[0.0, 0.0, 1.0]] * 3])
    st = pol.update(st, None, arms, clicks)
    cl, vw = np.zeros((8, 3)), np.zeros((8, 3))
    for row, r in zip(arms, clicks, strict=True):
        for j, (item, click) in enumerate(zip(row, r, strict=True)):
            vw[item, j] += 1.0  # every slot of a slate is observed
            cl[item, j] += click
    s = stats_np(st)
    close(s["clicks"], cl)
    close(s["views"], vw)
    c = cl.sum(1)
    a_ref = 1.5 + c
    b_ref = 2.0 + np.maximum(vw @ kappa - c, 0.0)
    assert vw[5] @ kappa - c[5] < 0  # the clamp is exercised
    close(st.cache["a"], a_ref)
    close(st.cache["b"], b_ref)
    close(st.cache["kappa"], kappa)
    out = pol.select(st, None, rkeys(N_KEYS, 5), k=K)
    for i in range(N_ITEMS):
        res = sps.kstest(out.scores[:, i], sps.beta(a_ref[i], b_ref[i]).cdf)
        assert res.statistic < 1.95 / math.sqrt(N_KEYS), (i, res)


def test_pbm_learned_kappa_recovers_truth():
    true_kappa = np.array([1.0, 0.55, 0.3])
    theta = np.array([0.2, 0.35, 0.5, 0.65, 0.8])
    rows = 20_000
    rng = np.random.default_rng(7)
    arms = np.argsort(rng.uniform(size=(rows, 5)), axis=1)[:, :3]
    clicks = (rng.uniform(size=(rows, 3)) < theta[arms] * true_kappa[None, :]).astype(float)
    pol = make("slate_pbm_ts", positions=3)  # kappa = None: learned
    st = pol.update(pol.init(5), None, arms, clicks)
    kappa = np.asarray(st.cache["kappa"])
    assert kappa[0] == 1.0 and np.all(np.diff(kappa) <= 0)
    assert np.all(np.abs(kappa - true_kappa) < 0.05), kappa
    # the posterior uses the learned kappa
    s = stats_np(st)
    c = s["clicks"].sum(1)
    close(st.cache["a"], 1.0 + c)
    close(st.cache["b"], 1.0 + np.maximum(s["views"] @ kappa - c, 0.0))
    post_mean = np.asarray(st.cache["a"] / (st.cache["a"] + st.cache["b"]))[:5]
    assert np.all(np.abs(post_mean - theta) < 0.03), post_mean


def test_inslate_merge_worked_example():
    a, b, c, d, e = range(5)
    lists = jnp.asarray([[[a, b, c], [a, b, d], [e, a, b]]])
    # priority R1[1], R2[1], R3[1], R1[2], ... = [a, a, e, b, b, a, c, d, b] -> [a, e, b]
    assert np.asarray(inslate_merge(lists)).tolist() == [[a, e, b]]


def test_inslate_merge_random_lists():
    rng = np.random.default_rng(8)
    m, k = 4, 4
    lists = np.stack(
        [np.stack([rng.permutation(7)[:k] for _ in range(m)]) for _ in range(200)]
    )  # [B, M, k]
    got = np.asarray(inslate_merge(jnp.asarray(lists)))
    for row, merged in zip(lists, got, strict=True):
        seen: list[int] = []
        for rank in range(k):
            for s in range(m):
                if row[s, rank] not in seen and len(seen) < k:
                    seen.append(int(row[s, rank]))
        assert merged.tolist() == seen


def test_inslate_stats_and_cache():
    lam = 0.6
    pol, st = new_policy("slate_inslate_ts", lam=lam)
    ctx, arms, clicks = sim_rows("slate_inslate_ts", 25, seed=9)
    st = pol.update(st, ctx, arms, clicks)
    x = ITEM_X[arms].reshape(-1, D)  # every slot of a slate is observed
    G, b = x.T @ x, x.T @ clicks.reshape(-1)
    s = stats_np(st)
    close(s["G"], G)
    close(s["b"], b)
    close(s["n"], np.bincount(arms.reshape(-1), minlength=8))
    close(st.cache["theta"], np.linalg.solve(lam * np.eye(D) + G, b))


# --- 2. ties ---------------------------------------------------------------------------------


@pytest.mark.parametrize("eps", [0.0, 0.3])
def test_fresh_ucb1_lists_are_uniform(eps):
    pol, st = new_policy("cascade_ucb1")
    for k in (3, 5):
        out = pol.select(st, None, rkeys(64, 10), epsilon=eps, k=k)
        expected = 1.0 / (N_ITEMS - np.arange(k))
        close(out.propensity, np.broadcast_to(expected, out.propensity.shape), 1e-12)
        close(out.propensity.prod(1), 1.0 / math.perm(N_ITEMS, k), 1e-12)
        assert all(len(set(r)) == k for r in out.arms.tolist())
        close(out.probs[:, :N_ITEMS], 1.0 / N_ITEMS, 1e-12)


def _tied_index_state(name):
    """Items 0, 1 tie at n=3, c=1; items 2, 3 at n=2, c=0; items 4, 5 are unexamined."""
    pol, st = new_policy(name)
    arms = [[0, 1, 2], [1, 0, 3], [2, 3, 0], [3, 2, 1]]
    clicks = [[0, 1, 0], [0, 1, 0], [0, 0, 0], [0, 0, 0]]
    st = pol.update(st, None, arms, clicks)
    s = stats_np(st)
    close(s["n"][:6], [3, 3, 2, 2, 0, 0])
    close(s["c"][:6], [1, 1, 0, 0, 0, 0])
    return pol, st


@pytest.mark.parametrize("name", ["cascade_ucb1", "cascade_klucb"])
@pytest.mark.parametrize("eps", [0.0, 0.25])
def test_tied_index_propensities_match_hand_counts(name, eps):
    pol, st = _tied_index_state(name)
    rows = 64
    group = {4: 0, 5: 0, 0: 1, 1: 1, 2: 2, 3: 2}  # tie groups, best first
    cases = [
        # (k, eligible items, greedy prefix probabilities P_g(a_1..a_j) of any greedy list)
        (3, range(6), [1 / 2, 1 / 2, 1 / 4]),  # {4,5} in random order, then one of {0,1}
        (5, range(6), [1 / 2, 1 / 2, 1 / 4, 1 / 4, 1 / 8]),  # ... the other, one of {2,3}
        (3, [0, 1, 2, 3, 5], [1, 1 / 2, 1 / 2]),  # 5, {0,1} in random order
        (2, [2, 3, 4], [1, 1 / 2]),
    ]
    for k, items, greedy in cases:
        elig = np.zeros((rows, 8), bool)
        elig[:, list(items)] = True
        e = len(items)
        out = pol.select(st, None, rkeys(rows, 11), elig, epsilon=eps, k=k)
        unif = np.cumprod(1.0 / (e - np.arange(k)))
        g_lists = set()
        for row, prop in zip(out.arms, out.propensity, strict=True):
            # is the row a greedy list? (its items follow the tie groups in order)
            order = [group[i] for i in row]
            avail = sorted(group[i] for i in items)[:k]
            is_greedy = order == avail
            g = np.array(greedy) if is_greedy else np.zeros(k)
            if not is_greedy:
                # a partially greedy prefix keeps its greedy mass up to the first deviation
                for j in range(k):
                    if order[: j + 1] != avail[: j + 1]:
                        break
                    g[j] = greedy[j]
            prefix = (1 - eps) * g + eps * unif
            expected = prefix / np.concatenate([[1.0], prefix[:-1]])
            close(prop, expected, 1e-12)
            if is_greedy:
                g_lists.add(tuple(row))
        # every greedy list was seen (the tie order is random, not first-index)
        assert len(g_lists) == round(1 / greedy[-1]) or eps > 0


# --- 3. batch == sequential, additivity ------------------------------------------------------


@pytest.mark.parametrize("name", RANKED)
def test_batch_equals_sequential_and_additive(name):
    pol, st0 = new_policy(name)
    ctx, arms, clicks = sim_rows(name, 13, seed=12)
    batch = pol.update(st0, ctx, arms, clicks)
    seq = st0
    for i in range(len(arms)):
        seq = pol.update(
            seq, None if ctx is None else ctx[i : i + 1], arms[i : i + 1], clicks[i : i + 1]
        )
    sb, ss, s0 = stats_np(batch), stats_np(seq), stats_np(st0)
    assert set(sb) == set(ss)
    for key in sb:
        close(ss[key], sb[key])
    for key in batch.cache:
        close(seq.cache[key], batch.cache[key])
    # the examined counts of a cascade really differ from "every slot" (the rule is exercised)
    if name.startswith("cascade_"):
        assert sb["n"].sum() < arms.size
    # additivity: X u Y == X + Y - init
    x_part, y_part = slice(0, 8), slice(8, None)
    sx = stats_np(
        pol.update(st0, None if ctx is None else ctx[x_part], arms[x_part], clicks[x_part])
    )
    sy = stats_np(
        pol.update(st0, None if ctx is None else ctx[y_part], arms[y_part], clicks[y_part])
    )
    for key in sb:
        close(sx[key] + sy[key] - s0[key], sb[key])


# --- 4. compile counts -----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["cascade_ucb1", "cascade_ts"])
def test_rank_select_compiles_once_per_bucket(name):
    pol, st = new_policy(name)
    st = pol.update(st, None, *sim_rows(name, 10, seed=13)[1:])
    key = (name, f"rank_select:{K}")
    rng = np.random.default_rng(14)
    seen: set[int] = set()
    for call in range(100):
        b = int(rng.integers(1, 41))
        before = TRACES[key]
        out = pol.select(st, None, rkeys(b, 100 + call), epsilon=0.0, k=K)
        assert out.arms.shape == (b, K)
        bucket = next_pow2(b)
        # a trace may only happen the first time a bucket is met (never for a seen bucket)
        assert TRACES[key] - before <= (0 if bucket in seen else 1), (b, bucket, seen)
        seen.add(bucket)
    assert len(seen) >= 5
    before = TRACES[key]
    for eps in (0.01, 0.2, 0.7, 1.0):
        pol.select(st, None, rkeys(20, 7), epsilon=eps, k=K)
    assert TRACES[key] == before


# --- 5. propensity frequencies (the acceptance test) -----------------------------------------

P_MIN = 0.01
MC_FAMILIES = ("cascade_lints", "slate_inslate_ts")


def _trained_for_freq(name):
    """(policy, state, item features): six items, 30 simulated rows (posteriors differ). The
    index families carry exact ties: UCB/KL-UCB items 0 = 1, 2 = 3 and 4 = 5 (unexamined);
    LinUCB items 1, 2 and 4 all clip at 1 (and 1 = 4 have identical features)."""
    if name in ("cascade_ucb1", "cascade_klucb"):
        return (*_tied_index_state(name), None)
    hyper = {"c_explore": 3.5} if name == "cascade_linucb" else {}
    x = X_DISTINCT if name in MC_FAMILIES else ITEM_X
    pol, st = new_policy(name, **hyper)
    _, arms, clicks = sim_rows(name, 30, seed=15)
    return pol, pol.update(st, ctx_rows(name, 30, x), arms, clicks), x


def _mc_draws(pol, name) -> int:
    return int(pol.hyper["mc_draws"]) if name in MC_FAMILIES else 0


def check_frequencies(out, m: int, eps: float, k: int = K) -> dict[tuple, float]:
    """Empirical list and first-slot frequencies against the logged propensities (4 sigma);
    returns each shown list's probability."""
    n_rows = out.arms.shape[0]
    assert out.arms.shape == (n_rows, k) and out.propensity.shape == (n_rows, k)
    assert all(len(set(r)) == k for r in out.arms.tolist())
    assert np.all((out.propensity > 0) & (out.propensity <= 1 + 1e-12))

    def sigma(p):
        return np.sqrt(p * (1 - p) / n_rows + (p * (1 - p) / m if m else 0.0))

    counts = Counter(map(tuple, out.arms.tolist()))
    p_list: dict[tuple, float] = {}
    for lst in counts:
        rows = np.flatnonzero((out.arms == np.asarray(lst)).all(1))
        props = out.propensity[rows]
        # every row showing the list logs the same per-slot propensities
        assert np.ptp(props, axis=0).max() <= 1e-12, (lst, props.min(0), props.max(0))
        p_list[lst] = float(props[0].prod())
    checked = 0
    for lst, p in p_list.items():
        if p >= P_MIN:
            checked += 1
            freq = counts[lst] / n_rows
            assert abs(freq - p) <= 4 * sigma(p), (lst, freq, p, sigma(p))
    assert checked >= 1
    # probability mass is neither lost nor invented: the shown lists carry (almost) all of it
    total = sum(p_list.values())
    # (count + 1) / (M + 1) frequencies of M simulated lists sum to (M + #lists) / (M + 1)
    slack = 2e-3 + ((1 - eps) * len(p_list) / m if m else 0.0)
    assert total <= 1.0 + slack, total
    if eps > 0:
        assert len(p_list) == math.perm(N_ITEMS, k)  # every list has p >= eps/120: all seen
        assert total >= 1.0 - 2e-3, total
    else:
        assert total >= 0.99, (total, len(p_list))  # no likely list went missing
    # first slot: frequency against P(a_1) (propensity[:, 0]) and probs (P(item in slot 1))
    probs = out.probs[:, :N_ITEMS]
    close(probs, np.broadcast_to(probs[0], probs.shape), 1e-12)
    assert abs(probs[0].sum() - 1.0) < 2e-3 and np.all(out.probs[:, N_ITEMS:] == 0.0)
    freq1 = np.bincount(out.arms[:, 0], minlength=8)[:N_ITEMS] / n_rows
    for i in range(N_ITEMS):
        rows = out.arms[:, 0] == i
        p = probs[0, i]
        assert abs(freq1[i] - p) <= 4 * sigma(p) + 1e-12, (i, freq1[i], p)
        if rows.any():
            p1 = out.propensity[rows, 0]
            assert np.ptp(p1) <= 1e-12
            assert abs(freq1[i] - p1[0]) <= 4 * sigma(p1[0]), (i, freq1[i], p1[0])
    return p_list


@pytest.mark.parametrize("eps", [0.0, 0.2])
@pytest.mark.parametrize("name", RANKED)
def test_list_frequencies_match_propensities(name, eps):
    pol, st, x = _trained_for_freq(name)
    ctx = None if x is None else ctx_rows(name, N_KEYS, x)
    out = pol.select(st, ctx, rkeys(N_KEYS, 16), epsilon=eps, k=K)
    check_frequencies(out, _mc_draws(pol, name), eps)
    if name == "cascade_linucb":
        assert (out.scores[0, :N_ITEMS] == 1.0).sum() == 3  # the clip ties three items
    if name in ("cascade_ucb1", "cascade_klucb", "cascade_linucb") and eps == 0:
        # ties: the greedy mass is split, so some slot has a propensity strictly inside (0, 1)
        assert ((out.propensity > 0.01) & (out.propensity < 0.99)).any()


_HOST_TIES = (
    "the host Monte Carlo list model orders exactly tied scores by item index "
    "(policies/cascade.py host_top_k: argpartition + stable argsort, used by _lin_ts_model and "
    "slate.py _inslate_model) while the kernel (ranked.top_k) orders them at random, so with "
    "two items of identical features the list (1, 4, .) is logged with ~2x its frequency and "
    "(4, 1, .) with 1/(M+1)"
)


@pytest.mark.parametrize("name", MC_FAMILIES)
def test_sampled_lists_exact_ties_share_mass(name):
    """Items 1 and 4 have identical features: every posterior draw ties them exactly."""
    pol, st = new_policy(name)
    _, arms, clicks = sim_rows(name, 30, seed=15)
    st = pol.update(st, ctx_rows(name, 30), arms, clicks)
    out = pol.select(st, ctx_rows(name, N_KEYS), rkeys(N_KEYS, 17), epsilon=0.0, k=K)
    tied = (out.arms == 1) | (out.arms == 4)
    assert (tied.sum(1) == 2).mean() > 0.05  # both tied items are shown together often
    # the two orders of the tied pair are equally likely and logged as such
    m = _mc_draws(pol, name)
    p_list = check_frequencies(out, m, 0.0)
    for lst, p in p_list.items():
        swapped = tuple({1: 4, 4: 1}.get(i, i) for i in lst)
        if p >= P_MIN and 1 in lst and 4 in lst:
            assert swapped in p_list
            # both are Monte Carlo estimates of the same probability from M simulated lists
            tol = 4 * np.sqrt(2 * p * (1 - p) / m)
            assert abs(p - p_list[swapped]) <= tol, (lst, p, p_list[swapped], tol)


# --- 6. quadrature accuracy ------------------------------------------------------------------


def test_beta_rank_quadrature_vs_monte_carlo():
    a = np.array([1.0, 3.0, 20.0, 600.0, 590.0])
    b = np.array([1.0, 8.0, 5.0, 400.0, 410.0])
    model = BetaRank(a, b, np.ones(5, bool))
    draws, chunk = 2_000_000, 500_000
    rng = np.random.default_rng(17)
    counts: Counter = Counter()
    for _ in range(draws // chunk):
        s = rng.beta(a, b, size=(chunk, 5))
        top = np.argsort(-s, axis=1)[:, :3]
        code = top[:, 0] * 25 + top[:, 1] * 5 + top[:, 2]
        u, c = np.unique(code, return_counts=True)
        counts.update(dict(zip(u.tolist(), c.tolist(), strict=True)))
    checked = 0
    for lst in itertools.permutations(range(5), 3):
        q = model.prefix(np.array(lst))
        assert np.all(np.diff(q) <= 1e-15) and q[0] <= 1.0
        for j in range(3):
            code_j = [
                c for c in counts if tuple(np.unravel_index(c, (5, 5, 5)))[: j + 1] == lst[: j + 1]
            ]
            n_j = sum(counts[c] for c in code_j)
            p_mc = n_j / draws
            p = max(q[j], p_mc)  # the binomial SE under the tested value (p_mc may be 0)
            se = math.sqrt(p * (1 - p) / draws)
            assert abs(q[j] - p_mc) <= max(0.02 * p_mc, 4 * se), (lst, j, q[j], p_mc, se)
            checked += p_mc >= 1e-3
    assert checked >= 20
    first = model.first()
    p_first = np.array([sum(v for c, v in counts.items() if c // 25 == i) for i in range(5)])
    p_first = p_first / draws
    se = np.sqrt(p_first * (1 - p_first) / draws)
    assert np.all(np.abs(first - p_first) <= np.maximum(0.02 * p_first, 4 * se)), (first, p_first)


def test_beta_rank_many_flat_items_exact():
    n = 200
    mask = np.ones(n + 8, bool)
    mask[n:] = False  # padding outside the eligible set
    model = BetaRank(np.ones(n + 8), np.ones(n + 8), mask)
    first = model.first()
    np.testing.assert_allclose(first[:n], 1.0 / n, rtol=0.02)
    assert np.all(first[n:] == 0.0)
    rng = np.random.default_rng(18)
    for _ in range(5):
        lst = rng.permutation(n)[:3]
        q = model.prefix(lst)
        exact = np.cumprod(1.0 / (n - np.arange(3)))
        np.testing.assert_allclose(q, exact, rtol=0.02)


# --- 7. bad input ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", RANKED)
def test_bad_update_input(name):
    pol, st = new_policy(name)
    ctx = ctx_rows(name, 2)
    with pytest.raises(ValueError, match="arms"):
        pol.update(st, ctx, [0, 1], [1.0, 0.0])  # [B], not [B, k]
    with pytest.raises(ValueError, match="arms"):
        pol.update(st, ctx, [[0, 1, 0], [1, 2, 3]], np.zeros((2, 3)))  # item 0 twice
    with pytest.raises(ValueError, match="arms"):
        pol.update(st, ctx, [[0, 1, 6], [1, 2, 3]], np.zeros((2, 3)))  # item 6 does not exist
    with pytest.raises(ValueError, match="rewards"):
        pol.update(st, ctx, [[0, 1, 2], [1, 2, 3]], np.zeros((2, 2)))
    if families()[name]["reward_kinds"] == ["binary"]:
        with pytest.raises(ValueError, match="rewards"):
            pol.update(st, ctx, [[0, 1, 2], [1, 2, 3]], [[0.0, 0.5, 0.0], [0.0, 0.0, 1.0]])
    if contextual(name):
        with pytest.raises(ValueError, match="contexts"):
            pol.update(st, None, [[0, 1, 2]], [[0.0, 0.0, 1.0]])


@pytest.mark.parametrize("name", RANKED)
def test_bad_select_input(name):
    pol, st = new_policy(name)
    ctx = ctx_rows(name, 2)
    ks = rkeys(2, 19)
    with pytest.raises(ValueError, match="^k:"):
        pol.select(st, ctx, ks)
    with pytest.raises(ValueError, match="^k:"):
        pol.select(st, ctx, ks, k=0)
    elig = np.ones((2, N_ITEMS), bool)
    elig[1, 2:] = False  # row 1 has two items
    with pytest.raises(ValueError, match="eligible"):
        pol.select(st, ctx, ks, elig, k=K)
    # more slots than items (PBM-TS also keeps fewer positions than that)
    with pytest.raises(ValueError, match="eligible|positions"):
        pol.select(st, ctx, ks, k=N_ITEMS + 1)
    # retired items do not count as eligible
    retired = pol.retire_arms(st, [0, 1, 2, 3])
    with pytest.raises(ValueError, match="eligible"):
        pol.select(retired, ctx, ks, k=K)
    with pytest.raises(ValueError, match="epsilon"):
        pol.select(st, ctx, ks, epsilon=1.5, k=K)


@pytest.mark.parametrize(
    "kappa",
    [
        [1.0, 0.7, 0.8],
        [0.9, 0.7, 0.5],
        [1.0, 0.5],
        [1.0, 0.6, 0.4, 0.2],
        [1.0, 0.5, 0.0],
        [1.0, 1.2, 0.5],
        "abc",
    ],
    ids=["increasing", "not-one", "short", "long", "zero", "above-one", "not-numbers"],
)
def test_bad_kappa(kappa):
    with pytest.raises(ValueError, match="kappa"):
        make("slate_pbm_ts", kappa=kappa, positions=3)


def test_pbm_lists_longer_than_positions_do_not_corrupt_other_items():
    pol = make("slate_pbm_ts", positions=2)
    st = pol.init(4)
    try:
        st2 = pol.update(st, None, [[0, 1, 2]], [[0.0, 0.0, 1.0]])
    except ValueError as err:  # rejecting the list is a fine answer
        assert "positions" in str(err) or "arms" in str(err) or "k" in str(err)
        return
    s = stats_np(st2)
    # item 3 was not shown: its statistics must stay zero; item 2 was shown (and clicked)
    assert s["views"][3].sum() == 0.0 and s["clicks"][3].sum() == 0.0, s
    assert s["clicks"][2].sum() == 1.0, s
