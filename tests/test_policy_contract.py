"""The policy contract (DESIGN.md §4): additive stats, batch == sequential updates, bounded
compilation across batch buckets and capacity doubling, and `make` / `families()` errors."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from banditd.policies import TRACES, families, make, next_pow2

# Ranked families (lists of k items) have their own contract tests (test_policy_ranked.py).
SINGLE = sorted(n for n, m in families().items() if not m["ranked"])
CASES = [(name, {}) for name in SINGLE] + [
    ("linucb", {"shared": True}),
    ("lin_ts", {"shared": True}),
]
IDS = [name + ("-shared" if h else "") for name, h in CASES]
N_ARMS, DIM = 4, 3


def _setup(name, hyper, n=24, seed=0):
    pol = make(name, **hyper)
    contextual = families()[name]["contextual"]
    st = pol.init(N_ARMS, dim=DIM if contextual else None)
    rng = np.random.default_rng(seed)
    arms = rng.integers(0, N_ARMS, n)
    rewards = rng.uniform(size=n)
    prop = rng.uniform(0.2, 1.0, n)
    if not contextual:
        ctx = None
    elif hyper.get("shared"):
        ctx = rng.normal(size=(n, N_ARMS, DIM))
    else:
        ctx = rng.normal(size=(n, DIM))
    return pol, st, ctx, arms, rewards, prop


def _rows(ctx, idx):
    return None if ctx is None else ctx[idx]


def _kernel_delta(pol, st, ctx, arms, rewards, prop, weights=None):
    """Call the raw kernel the way a simulator would: played-arm features, float64 rows."""
    n = len(arms)
    if ctx is None:
        x = np.zeros((n, 0))
    elif ctx.ndim == 3:
        x = ctx[np.arange(n), arms]
    else:
        x = ctx
    w = np.ones(n) if weights is None else weights
    d = pol.kernels.delta(
        pol.kernels.h,
        st,
        jnp.asarray(x),
        jnp.asarray(arms),
        jnp.asarray(rewards),
        jnp.asarray(w),
        jnp.asarray(prop),
        jnp.zeros(n),
    )
    return {k: np.asarray(v) for k, v in d.items()}


def _assert_tree_close(a, b, tol=1e-9):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(
            np.asarray(a[k]), np.asarray(b[k]), rtol=tol, atol=tol, err_msg=k
        )


@pytest.mark.parametrize(("name", "hyper"), CASES, ids=IDS)
def test_batch_update_equals_one_at_a_time(name, hyper):
    pol, st0, ctx, arms, rewards, prop = _setup(name, hyper)
    batch = pol.update(st0, ctx, arms, rewards, propensity=prop)
    seq = st0
    for i in range(len(arms)):
        sl = slice(i, i + 1)
        seq = pol.update(seq, _rows(ctx, sl), arms[sl], rewards[sl], propensity=prop[sl])
    _assert_tree_close(batch.stats, seq.stats)
    _assert_tree_close(batch.cache, seq.cache)
    # the version counts applied batches, so it tells the two histories apart
    assert int(batch.meta.version) == 1 and int(seq.meta.version) == len(arms)
    # and the update did something: stats moved off their zero init
    assert any(np.abs(np.asarray(v)).sum() > 0 for v in batch.stats.values())


# Merge rules whose deltas have the stats' layout but do not add (anchored decayed sums, rings of
# time buckets, policies/drift.py): two deltas merge as a delta merges into stats (``combine``).
AS_STATS = ("anchored", "ring")


def _merge(dx, dy, union: bool, combine=None):
    """The declared merge of two deltas: sums add; point logs (merge "union ...") concatenate;
    AS_STATS rules go through the family's combine."""
    if union:
        return {k: np.concatenate([dx[k], dy[k]]) for k in dx}
    if combine is not None:
        return combine(dx, dy)
    return {k: dx[k] + dy[k] for k in dx}


def _assert_same_state(pol, a, b, ctx, union: bool, cache: bool = True):
    """Sum families: equal stats (and cache). Point-log families hold the same points, though
    maybe in other slots: each stat is compared sorted along its point axis, and the model
    they define is compared through the scores it serves."""
    if not union:
        _assert_tree_close(a.stats, b.stats)
        if cache:
            _assert_tree_close(a.cache, b.cache)
        return
    for k in a.stats:
        x, y = np.asarray(a.stats[k]), np.asarray(b.stats[k])
        if x.ndim >= 2:
            x, y = np.sort(x, axis=1), np.sort(y, axis=1)
        np.testing.assert_allclose(x, y, rtol=1e-9, atol=1e-9, err_msg=k)
    q = None if ctx is None else ctx[:4]
    ks = np.zeros((4, 2), np.uint32)
    sa, sb = pol.select(a, q, ks).scores, pol.select(b, q, ks).scores
    np.testing.assert_allclose(sa, sb, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize(("name", "hyper"), CASES, ids=IDS)
def test_deltas_are_additive(name, hyper):
    """Deltas merge by the family's declared rule: "sum" (DESIGN.md §4), or for point logs
    "union ..." (exact PAK-UCB): the union of two logs is their concatenation."""
    rule = families()[name]["merge"]
    union = rule.startswith("union")
    pol, st0, ctx, arms, rewards, prop = _setup(name, hyper, seed=1)
    combine = None
    if rule.startswith(AS_STATS):

        def combine(a, b):
            out = pol.kernels.apply(pol.kernels.h, st0._replace(stats=a), b).stats
            return {k: np.asarray(v) for k, v in out.items()}

    k = 9
    dx = _kernel_delta(pol, st0, _rows(ctx, slice(None, k)), arms[:k], rewards[:k], prop[:k])
    dy = _kernel_delta(pol, st0, _rows(ctx, slice(k, None)), arms[k:], rewards[k:], prop[k:])
    dxy = _kernel_delta(pol, st0, ctx, arms, rewards, prop)
    _assert_tree_close(_merge(dx, dy, union, combine), dxy)

    # replicas applying the two deltas in either order reach the state of one merged update
    h = pol.kernels.h
    xy = pol.kernels.apply(h, pol.kernels.apply(h, st0, dx), dy)
    yx = pol.kernels.apply(h, pol.kernels.apply(h, st0, dy), dx)
    merged = pol.update(st0, ctx, arms, rewards, propensity=prop)
    _assert_same_state(pol, xy, merged, ctx, union)
    _assert_same_state(pol, yx, merged, ctx, union, cache=False)

    # bucket padding relies on zero-weight rows contributing nothing, whatever they hold
    garbage = np.concatenate([arms, [0, 3]]), np.concatenate([rewards, [7.0, -3.0]])
    gctx = None if ctx is None else np.concatenate([ctx, ctx[:2] * 5.0])
    padded = _kernel_delta(
        pol,
        st0,
        gctx,
        garbage[0],
        garbage[1],
        np.concatenate([prop, [1, 1]]),
        weights=np.r_[np.ones(len(arms)), 0.0, 0.0],
    )
    if union:  # a log keeps the rows it was given; merging them must not
        _assert_tree_close(
            pol.kernels.apply(h, st0, padded).stats, pol.kernels.apply(h, st0, dxy).stats
        )
    else:
        _assert_tree_close(padded, dxy)


def select_traces(family: str) -> int:
    """Traces of every select program of a family (the builder may split select into variants)."""
    return sum(v for (f, k), v in TRACES.items() if f == family and k.startswith("select"))


def test_select_compiles_once_per_bucket_and_capacity():
    """1,000 selects with B in 1..256 and 64 single-arm additions: each (bucket, capacity) pair
    traces select exactly once, so the trace count equals the number of pairs seen."""
    rng = np.random.default_rng(2)
    dim = 5
    # refresh_every is static and identity-free: a value no other test uses gives this test its
    # own compiled programs, so every pair starts untraced and the count is exact
    pol = make("linucb", refresh_every=977)
    st = pol.init(3, dim=dim)
    add_at = set(rng.choice(1000, 64, replace=False).tolist())
    before = select_traces("linucb")
    seen: set[tuple[int, int]] = set()
    traced: set[tuple[int, int]] = set()
    for i in range(1000):
        if i in add_at:
            st = pol.add_arms(st, 1)
        b = int(rng.integers(1, 257))
        cap = int(np.shape(st.meta.active)[0])
        pair = (next_pow2(b), cap)
        seen.add(pair)
        n0 = select_traces("linucb")
        keys = rng.integers(0, 2**32, size=(b, 2), dtype=np.uint32)
        out = pol.select(st, rng.normal(size=(b, dim)), keys, epsilon=float(rng.uniform(0, 0.2)))
        assert out.arms.shape == (b,)
        if select_traces("linucb") > n0:
            assert pair not in traced, f"select retraced for (bucket, capacity) {pair}"
            traced.add(pair)
    grew = select_traces("linucb") - before
    assert int(st.meta.n_arms) == 3 + 64
    caps = sorted({c for _, c in seen})
    assert caps[-1] >= 67 and all(b == 2 * a for a, b in zip(caps, caps[1:], strict=False))
    assert len({bk for bk, _ in seen}) == 9  # buckets 1, 2, 4, ..., 256
    assert grew == len(traced) == len(seen)


# --- make / families ---------------------------------------------------------------------


def test_families_metadata_lists_every_family():
    fams = families()
    assert {
        "beta_ts",
        "gaussian_ts",
        "nig_ts",
        "lin_ts",
        "ucb1",
        "epsilon_greedy",
        "exp3",
        "linucb",
    } <= set(fams)
    for name, meta in fams.items():
        for field in ("contextual", "ranked", "merge", "hyperparameters"):
            assert field in meta, (name, field)
        assert isinstance(meta["contextual"], bool) and isinstance(meta["ranked"], bool)
        assert meta["merge"]
        for hname, hmeta in meta["hyperparameters"].items():
            assert "default" in hmeta and "doc" in hmeta, (name, hname)
        # every listed default builds
        make(name)
    assert fams["linucb"]["contextual"] and not fams["beta_ts"]["contextual"]
    assert fams["linucb"]["hyperparameters"]["alpha"]["default"] == 1.0
    assert fams["exp3"]["needs_propensity"]


def test_make_unknown_family():
    with pytest.raises(ValueError) as e:
        make("no_such_family")
    assert str(e.value).startswith("family")
    assert "no_such_family" in str(e.value)


@pytest.mark.parametrize(
    ("name", "hyper", "bad"),
    [
        ("linucb", {"gamma": 1.0}, "gamma"),
        ("beta_ts", {"alpha": 1.0}, "alpha"),
        ("exp3", {"auto_alpha": False}, "auto_alpha"),  # derived, not settable
        ("linucb", {"alpha": -1.0}, "alpha"),
        ("linucb", {"alpha": float("nan")}, "alpha"),
        ("linucb", {"lam": 0.0}, "lam"),
        ("linucb", {"serving_dtype": "float16"}, "serving_dtype"),
        ("linucb", {"shared": "yes"}, "shared"),
        ("lin_ts", {"mc_draws": 0.5}, "mc_draws"),
        ("beta_ts", {"prior_a": 0.0}, "prior_a"),
        ("gaussian_ts", {"mu0": float("inf")}, "mu0"),
        ("nig_ts", {"prior_b": -2.0}, "prior_b"),
        ("epsilon_greedy", {"epsilon": 1.5}, "epsilon"),
        ("exp3", {"alpha": 0.0}, "alpha"),
        ("exp3", {"horizon": "many"}, "horizon"),
        ("ucb1", {"alpha": None}, "alpha"),
    ],
)
def test_make_rejects_bad_hyperparameters(name, hyper, bad):
    with pytest.raises(ValueError) as e:
        make(name, **hyper)
    assert str(e.value).startswith(bad + ":"), str(e.value)
