"""Ranked environments: cascade clicks and position-based slates."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from banditd import sim

DRAWS = 20_000


def keys(n: int, seed: int = 0):
    return jax.random.split(jax.random.PRNGKey(seed), n)


def many(env, arms, n: int = DRAWS, seed: int = 0) -> np.ndarray:
    """Per-slot rewards [n, k] of showing ``arms`` in n independent rounds."""
    _, means = env.observe(keys(1, 99)[0], 0)
    f = jax.jit(jax.vmap(env.slate_rewards, in_axes=(0, None, None)))
    return np.asarray(f(keys(n, seed), means, jnp.asarray(arms)))


def all_lists(n: int, k: int) -> np.ndarray:
    return np.array(list(itertools.permutations(range(n), k)))


# --- construction --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make_env", "name"),
    [(sim.cascade, "cascade"), (sim.pbm, "pbm")],
    ids=["cascade", "pbm"],
)
def test_attributes_and_observe_shapes(make_env, name):
    env = make_env(12, 3, seed=1)
    assert (env.name, env.reward_kind, env.ranked) == (name, "binary", True)
    assert (env.n_arms, env.dim, env.slots, env.per_arm) == (12, 0, 3, False)
    ctx, means = env.observe(keys(1)[0], 0)
    assert ctx.shape == (0,) and means.shape == (12,) and means.dtype == jnp.float64
    assert ((means > 0) & (means < 1)).all()

    lin = make_env(30, 4, dim=5, seed=1)
    assert (lin.n_arms, lin.dim, lin.slots, lin.per_arm) == (30, 5, 4, True)
    ctx, means = lin.observe(keys(1)[0], 7)
    assert ctx.shape == (30, 5) and means.shape == (30,)
    x, w = np.asarray(ctx), np.asarray(means)
    assert (x >= 0).all()
    np.testing.assert_allclose(x.sum(1), 1.0, atol=1e-12)
    np.testing.assert_allclose(w, np.clip(x @ np.asarray(lin.weights), 0.01, 0.99), atol=1e-12)
    assert w.min() < 0.15 and w.max() > 0.4, w  # a sensible spread, not bunched at the mean
    again, _ = lin.observe(keys(1, 5)[0], 3)
    np.testing.assert_array_equal(again, x)  # item features are fixed per env


def test_cascade_follows_kveton_et_al():
    env = sim.cascade(20, 4, p=0.3, delta=0.1, seed=2)
    w = np.sort(np.asarray(env.attraction))
    np.testing.assert_allclose(w, [0.2] * 16 + [0.3] * 4)
    other = np.asarray(sim.cascade(20, 4, p=0.3, delta=0.1, seed=3).attraction)
    assert not np.array_equal(np.asarray(env.attraction), other)  # shuffled by the seed
    given = sim.cascade(3, 2, attraction=[0.1, 0.5, 0.9])
    np.testing.assert_array_equal(given.attraction, [0.1, 0.5, 0.9])


def test_pbm_default_kappa_and_seeded_theta():
    env = sim.pbm(10, 4, seed=0)
    np.testing.assert_allclose(env.kappa, 1.0 / np.arange(1, 5) ** 0.8)
    theta = np.asarray(env.attraction)
    assert ((theta >= 0.02) & (theta <= 0.8)).all() and np.ptp(theta) > 0.2
    np.testing.assert_array_equal(sim.pbm(10, 4, seed=0).attraction, theta)
    assert not np.array_equal(sim.pbm(10, 4, seed=1).attraction, theta)
    np.testing.assert_array_equal(sim.pbm(5, 2, kappa=[1.0, 0.5]).kappa, [1.0, 0.5])


@pytest.mark.parametrize(
    ("call", "arg"),
    [
        (lambda: sim.cascade(5, 0), "k"),
        (lambda: sim.cascade(3, 4), "n_items"),
        (lambda: sim.cascade(5, 2, dim=-1), "dim"),
        (lambda: sim.cascade(5, 2, p=1.5), "p"),
        (lambda: sim.cascade(5, 2, p=0.2, delta=0.3), "delta"),
        (lambda: sim.cascade(5, 2, dim=3, w_range=(0.5, 0.2)), "w_range"),
        (lambda: sim.cascade(3, 2, attraction=[0.1, 1.2, 0.3]), "attraction"),
        (lambda: sim.cascade(3, 2, attraction=[0.1, 0.2]), "attraction"),
        (lambda: sim.cascade(3, 2, dim=2, attraction=[0.1, 0.2, 0.3]), "attraction"),
        (lambda: sim.pbm(5, 0), "k"),
        (lambda: sim.pbm(2, 3), "n_items"),
        (lambda: sim.pbm(5, 2, dim=-2), "dim"),
        (lambda: sim.pbm(5, 3, kappa=[1.0, 0.5]), "kappa"),
        (lambda: sim.pbm(5, 2, kappa=[0.9, 0.5]), "kappa"),
        (lambda: sim.pbm(5, 3, kappa=[1.0, 0.5, 0.7]), "kappa"),
        (lambda: sim.pbm(5, 2, kappa=[1.0, 0.0]), "kappa"),
        (lambda: sim.pbm(5, 2, theta_range=(0.0, 1.0)), "theta_range"),
        (lambda: sim.pbm(3, 2, attraction=[0.1, -0.2, 0.3]), "attraction"),
    ],
)
def test_constructors_reject_bad_arguments(call, arg):
    with pytest.raises(ValueError, match=rf"^{arg}:"):
        call()


@pytest.mark.parametrize("make_env", [sim.cascade, sim.pbm], ids=["cascade", "pbm"])
@pytest.mark.parametrize("dim", [0, 3])
def test_parameters_are_fixed_by_the_seed(make_env, dim):
    leaves = lambda e: [np.asarray(v) for v in jax.tree_util.tree_leaves(e)]  # noqa: E731
    a, b, c = (
        make_env(8, 2, dim=dim, seed=4),
        make_env(8, 2, dim=dim, seed=4),
        make_env(8, 2, dim=dim, seed=5),
    )
    assert all(np.array_equal(u, v) for u, v in zip(leaves(a), leaves(b), strict=True))
    assert not all(np.array_equal(u, v) for u, v in zip(leaves(a), leaves(c), strict=True))


# --- cascade -------------------------------------------------------------------------------


def test_cascade_clicks_come_from_one_set_of_attractive_items_per_key():
    """Every list shown in a round is scored against the same attractive items."""
    env = sim.cascade(6, 3, attraction=[0.1, 0.3, 0.5, 0.7, 0.2, 0.4])
    lists = all_lists(6, 3)  # every item leads some list: that list reveals its attractiveness
    f = jax.jit(jax.vmap(jax.vmap(env.slate_rewards, (None, None, 0)), (0, None, None)))
    ks = keys(40, 1)
    r = np.asarray(f(ks, env.attraction, jnp.asarray(lists)))  # [keys, lists, k]
    np.testing.assert_array_equal(r, np.asarray(f(ks, env.attraction, jnp.asarray(lists))))
    n_clicks = set()
    for rk in r:
        attractive = np.zeros(6, bool)
        for lst, rew in zip(lists, rk, strict=True):
            attractive[lst[0]] = rew[0] == 1.0
        shown = attractive[lists]  # [lists, k]
        want = shown & (np.cumsum(shown, axis=1) == 1)
        np.testing.assert_array_equal(rk, want.astype(float))
        n_clicks.add(int(attractive.sum()))
    assert len(n_clicks) > 1  # the keys drew different users


def test_cascade_pays_one_click_at_most_and_nothing_after_it():
    env = sim.cascade(10, 4, seed=0, p=0.6, delta=0.2)
    r = many(env, [3, 0, 7, 5], n=4000)
    assert set(np.unique(r)) <= {0.0, 1.0}
    assert r.sum(1).max() == 1.0 and r.sum(1).min() == 0.0
    after = np.cumsum(r, axis=1) - r
    assert (r[after > 0] == 0).all()
    assert (r[:, 1:].sum(0) > 0).all()  # later slots do get clicks when earlier ones do not


@pytest.mark.parametrize("dim", [0, 4])
def test_cascade_click_rate_matches_slate_value(dim):
    env = sim.cascade(12, 4, dim=dim, seed=3)
    _, means = env.observe(keys(1)[0], 0)
    arms = np.asarray([5, 2, 9, 0])
    v = float(env.slate_value(means, jnp.asarray(arms)))
    np.testing.assert_allclose(v, 1 - np.prod(1 - np.asarray(means)[arms]))
    r = many(env, arms)
    se = np.sqrt(v * (1 - v) / DRAWS)
    assert abs(r.sum(1).mean() - v) <= 4 * se, (r.sum(1).mean(), v)
    # the click position follows the cascade: slot j is clicked w.p. w_j * prod_{i<j} (1 - w_i)
    w = np.asarray(means)[arms]
    per_slot = w * np.concatenate([[1.0], np.cumprod(1 - w)[:-1]])
    assert (np.abs(r.mean(0) - per_slot) <= 4 * np.sqrt(per_slot * (1 - per_slot) / DRAWS)).all()


@pytest.mark.parametrize("dim", [0, 3])
def test_cascade_best_value_is_the_top_k_list(dim):
    env = sim.cascade(7, 3, dim=dim, seed=6, p=0.4, delta=0.25)
    _, means = env.observe(keys(1)[0], 0)
    lists = all_lists(7, 3)
    values = np.asarray(jax.vmap(env.slate_value, (None, 0))(means, jnp.asarray(lists)))
    best = float(env.best_value(means))
    top = np.argsort(-np.asarray(means))[:3]
    np.testing.assert_allclose(best, float(env.slate_value(means, jnp.asarray(top))))
    np.testing.assert_allclose(best, values.max())
    assert (values <= best + 1e-12).all() and values.min() < best - 0.05


# --- position-based model ------------------------------------------------------------------


@pytest.mark.parametrize("dim", [0, 4])
def test_pbm_slot_click_rates_are_kappa_times_theta(dim):
    env = sim.pbm(10, 4, dim=dim, seed=2)
    _, means = env.observe(keys(1)[0], 0)
    arms = np.asarray([int(np.argmax(means)), 1, 7, 4])
    r = many(env, arms)
    assert set(np.unique(r)) <= {0.0, 1.0}
    want = np.asarray(env.kappa) * np.asarray(means)[arms]
    se = np.sqrt(want * (1 - want) / DRAWS)
    assert (np.abs(r.mean(0) - want) <= 4 * se).all(), (r.mean(0), want)
    assert (r.sum(1) >= 2).any()  # several slots may click in one round
    v = float(env.slate_value(means, jnp.asarray(arms)))
    np.testing.assert_allclose(v, want.sum())


def test_pbm_slot_outcome_depends_only_on_the_item_there():
    env = sim.pbm(6, 3, seed=1, attraction=[0.9, 0.5, 0.7, 0.3, 0.6, 0.8], kappa=[1.0, 0.8, 0.6])
    f = jax.jit(jax.vmap(env.slate_rewards, (0, None, None)))
    ks = keys(500, 2)
    a = np.asarray(f(ks, env.attraction, jnp.asarray([0, 1, 2])))
    b = np.asarray(f(ks, env.attraction, jnp.asarray([3, 1, 5])))
    c = np.asarray(f(ks, env.attraction, jnp.asarray([1, 0, 2])))
    np.testing.assert_array_equal(a[:, 1], b[:, 1])  # item 1 at slot 1 in both
    np.testing.assert_array_equal(a[:, 2], c[:, 2])  # item 2 at slot 2 in both
    assert not np.array_equal(a[:, 0], b[:, 0])  # different items at slot 0
    np.testing.assert_array_equal(a, np.asarray(f(ks, env.attraction, jnp.asarray([0, 1, 2]))))


@pytest.mark.parametrize("dim", [0, 3])
def test_pbm_best_value_is_the_brute_force_maximum(dim):
    env = sim.pbm(5, 3, dim=dim, seed=8, kappa=[1.0, 0.6, 0.3])
    _, means = env.observe(keys(1)[0], 0)
    lists = all_lists(5, 3)
    values = np.asarray(jax.vmap(env.slate_value, (None, 0))(means, jnp.asarray(lists)))
    np.testing.assert_allclose(values, (np.asarray(env.kappa) * np.asarray(means)[lists]).sum(1))
    np.testing.assert_allclose(float(env.best_value(means)), values.max(), atol=1e-12)
    assert values.min() < values.max() - 0.05


def test_rewards_replay_from_the_documented_draws():
    """The common random numbers are exactly the documented ones, so a host can replay a round."""
    cas = sim.cascade(7, 3, seed=1, p=0.5, delta=0.2)
    pos = sim.pbm(7, 3, seed=1)
    ks = keys(300, 3)
    arms = np.stack([np.random.default_rng(i).permutation(7)[:3] for i in range(300)])
    slot = np.arange(3)
    u = np.asarray(jax.vmap(lambda k: jax.random.uniform(k, (7,)))(ks))
    shown = np.take_along_axis(u < np.asarray(cas.attraction), arms, axis=1)
    want = (shown & (np.cumsum(shown, axis=1) == 1)).astype(float)
    got = jax.vmap(cas.slate_rewards, (0, None, 0))(ks, cas.attraction, arms)
    np.testing.assert_array_equal(got, want)
    u2 = np.asarray(jax.vmap(lambda k: jax.random.uniform(k, (7, 3)))(ks))
    drawn = u2[np.arange(300)[:, None], arms, slot[None, :]]
    want = (drawn < np.asarray(pos.kappa) * np.asarray(pos.attraction)[arms]).astype(float)
    got = jax.vmap(pos.slate_rewards, (0, None, 0))(ks, pos.attraction, arms)
    np.testing.assert_array_equal(got, want)


# --- JAX compatibility ---------------------------------------------------------------------


@pytest.mark.parametrize("make_env", [sim.cascade, sim.pbm], ids=["cascade", "pbm"])
def test_jit_vmap_and_scan(make_env):
    env = make_env(8, 3, dim=2, seed=0)
    _, means = env.observe(keys(1)[0], 0)
    arms = jnp.asarray([4, 0, 6])
    r = jax.jit(jax.vmap(env.slate_rewards, in_axes=(0, None, None)))(keys(16), means, arms)
    assert r.shape == (16, 3) and r.dtype == jnp.float64

    # The env is a jit argument: arrays are leaves, slots is static (it sets the program's shapes).
    leaves, treedef = jax.tree_util.tree_flatten(env)
    assert all(isinstance(v, jax.Array) for v in leaves)
    assert treedef != jax.tree_util.tree_flatten(make_env(8, 2, dim=2, seed=0))[1]

    def play(e, ks):
        def step(t, key):
            ctx, m = e.observe(key, t)
            a = jax.lax.top_k(m, e.slots)[1]
            gap = e.best_value(m) - e.slate_value(m, a)
            return t + 1, (e.slate_rewards(key, m, a), gap, ctx)

        return jax.lax.scan(step, 0, ks)

    run = jax.jit(play)
    n, (rewards, gaps, ctxs) = run(env, keys(10))
    assert int(n) == 10 and rewards.shape == (10, 3) and ctxs.shape == (10, 8, 2)
    np.testing.assert_allclose(gaps, 0.0, atol=1e-12)  # the top-k list is optimal for both
