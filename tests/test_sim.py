"""Environments and the simulator: data, means, determinism, reward ranges, run bookkeeping."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from banditd import sim
from banditd.policies import make

ROUNDS = 400


def keys(n: int, seed: int = 0):
    return jax.random.split(jax.random.PRNGKey(seed), n)


# --- digits ----------------------------------------------------------------------------------


def test_digits_data_shapes_labels_and_bias():
    env = sim.digits()
    x, y = np.asarray(env.images), np.asarray(env.labels)
    assert (env.n_arms, env.dim, env.per_arm, env.reward_kind) == (10, 65, False, "binary")
    assert x.shape == (1797, 65) and y.shape == (1797,)
    assert set(np.unique(y)) == set(range(10))
    np.testing.assert_array_equal(x[:, -1], 1.0)
    assert x[:, :-1].min() == 0.0 and x[:, :-1].max() == 1.0


def test_digits_rounds_pay_one_for_the_right_class():
    env = sim.digits()
    x, y = np.asarray(env.images), np.asarray(env.labels)
    real = sim.realize(env, 50, seed=3)
    for ctx, means, rewards in zip(*real, strict=True):
        rows = np.flatnonzero((x == ctx).all(axis=1))
        assert rows.size >= 1, "the context must be one of the images"
        assert {int(y[i]) for i in rows} == {int(np.argmax(means))}
        np.testing.assert_array_equal(means, np.eye(10)[np.argmax(means)])
        np.testing.assert_array_equal(rewards, means)


# --- means and rewards -------------------------------------------------------------------------


def test_bernoulli_means_and_binary_rewards():
    env = sim.bernoulli(6, seed=2)
    real = sim.realize(env, 4000, seed=0)
    np.testing.assert_array_equal(real.means, np.broadcast_to(env.means, real.means.shape))
    assert real.contexts.shape == (4000, 0)
    assert set(np.unique(real.rewards)) <= {0.0, 1.0}
    freq = real.rewards.mean(0)
    se = np.sqrt(env.means * (1 - env.means) / 4000)
    assert (np.abs(freq - env.means) <= 5 * se + 1e-12).all(), (freq, env.means)


def test_bernoulli_rejects_means_outside_unit_interval():
    with pytest.raises(ValueError, match="means"):
        sim.bernoulli(means=[0.2, 1.5])


def test_gaussian_rewards_center_on_means():
    env = sim.gaussian(5, seed=4, sd=2.0)
    real = sim.realize(env, 4000, seed=1)
    assert np.isfinite(real.rewards).all()
    err = real.rewards.mean(0) - np.asarray(env.means)
    assert (np.abs(err) <= 5 * 2.0 / np.sqrt(4000)).all(), err
    assert abs((real.rewards - real.means).std() - 2.0) < 0.1


def test_linear_disjoint_means_are_theta_dot_context():
    env = sim.linear_disjoint(4, 3, seed=5, sd=0.3)
    real = sim.realize(env, 2000, seed=2)
    assert real.contexts.shape == (2000, 3)
    np.testing.assert_allclose(real.means, real.contexts @ np.asarray(env.theta).T, atol=1e-12)
    resid = real.rewards - real.means
    assert abs(resid.std() - 0.3) < 0.02 and abs(resid.mean()) < 0.02


def test_linear_per_arm_means_are_features_dot_theta():
    env = sim.linear_per_arm(5, 3, seed=6, sd=0.0)
    real = sim.realize(env, 100, seed=3)
    assert env.per_arm and real.contexts.shape == (100, 5, 3)
    np.testing.assert_allclose(real.means, real.contexts @ np.asarray(env.theta), atol=1e-12)
    np.testing.assert_allclose(real.rewards, real.means, atol=1e-12)  # sd=0: no noise


# --- determinism -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make_env",
    [
        lambda s: sim.bernoulli(10, seed=s),
        lambda s: sim.gaussian(10, seed=s),
        lambda s: sim.linear_disjoint(4, 3, seed=s),
        lambda s: sim.linear_per_arm(4, 3, seed=s),
    ],
    ids=["bernoulli", "gaussian", "linear_disjoint", "linear_per_arm"],
)
def test_parameters_and_rounds_are_fixed_by_seeds(make_env):
    a, b, c = make_env(0), make_env(0), make_env(1)
    leaves = lambda e: [np.asarray(v) for v in jax.tree_util.tree_leaves(e)]  # noqa: E731
    assert all(np.array_equal(u, v) for u, v in zip(leaves(a), leaves(b), strict=True))
    assert not all(np.array_equal(u, v) for u, v in zip(leaves(a), leaves(c), strict=True))
    r1, r2, r3 = sim.realize(a, 50, seed=7), sim.realize(a, 50, seed=7), sim.realize(a, 50, seed=8)
    for u, v in zip(r1, r2, strict=True):
        np.testing.assert_array_equal(u, v)
    assert not np.array_equal(r1.rewards, r3.rewards)


def test_environment_is_a_pytree_usable_under_vmap():
    for e in (sim.bernoulli(), sim.gaussian(), sim.linear_per_arm(), sim.digits()):
        assert isinstance(e, sim.Env), type(e)
    env = sim.linear_disjoint(4, 3, seed=0)
    ctx, means = jax.vmap(env.observe)(keys(8), np.arange(8))
    assert ctx.shape == (8, 3) and means.shape == (8, 4)
    rewards = jax.vmap(env.reward, in_axes=(0, 0, None))(keys(8, 1), means, 2)
    assert rewards.shape == (8,)
    out = jax.jit(lambda e, k: e.observe(k, 0)[1])(env, keys(1)[0])
    assert out.shape == (4,)


# --- the run -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("family", "hyper", "env"),
    [
        ("ucb1", {}, sim.bernoulli(5, seed=1)),
        ("linucb", {"shared": True}, sim.linear_per_arm(5, 3, seed=1)),
        ("linucb", {}, sim.linear_disjoint(5, 3, seed=1)),
    ],
    ids=["ucb1-bernoulli", "linucb-per_arm", "linucb-disjoint"],
)
def test_run_faces_the_realized_rounds(family, hyper, env):
    seeds = [3, 11]
    res = sim.run(make(family, **hyper), env, ROUNDS, seeds)
    assert res.regret.shape == res.reward.shape == res.arms.shape == (2, ROUNDS)
    assert res.arms.min() >= 0 and res.arms.max() < env.n_arms
    for i, s in enumerate(seeds):
        real = sim.realize(env, ROUNDS, s)
        rows = np.arange(ROUNDS)
        got_r = np.diff(res.reward[i], prepend=0.0)
        got_gap = np.diff(res.regret[i], prepend=0.0)
        np.testing.assert_allclose(got_r, real.rewards[rows, res.arms[i]], atol=1e-9)
        want_gap = real.means.max(1) - real.means[rows, res.arms[i]]
        np.testing.assert_allclose(got_gap, want_gap, atol=1e-9)
    again = sim.run(make(family, **hyper), env, ROUNDS, seeds)
    np.testing.assert_array_equal(again.arms, res.arms)


def test_seeds_give_different_runs():
    res = sim.run(make("beta_ts"), sim.bernoulli(5, seed=0), ROUNDS, [0, 1])
    assert not np.array_equal(res.arms[0], res.arms[1])


def test_learning_beats_uniform_on_the_same_rounds():
    env = sim.bernoulli(5, seed=3)
    mine = sim.run(make("ucb1"), env, ROUNDS, [0, 1, 2]).regret[:, -1]
    base = sim.uniform(env, ROUNDS, [0, 1, 2]).regret[:, -1]
    assert (mine < base).all(), (mine, base)


def test_uniform_baseline_spreads_choices_evenly():
    env = sim.bernoulli(4, seed=0)
    res = sim.uniform(env, 4000, [0])
    np.testing.assert_array_equal(res.propensity, 0.25)
    freq = np.bincount(res.arms[0], minlength=4) / 4000
    assert (np.abs(freq - 0.25) <= 5 * np.sqrt(0.25 * 0.75 / 4000)).all(), freq
    gaps = float(np.max(env.means) - np.mean(env.means))
    expected = gaps * 4000
    assert abs(res.regret[0, -1] - expected) <= 5 * np.sqrt(4000) * 1.0


def test_epsilon_floor_reaches_the_logged_propensity():
    eps, n = 0.2, 5
    res = sim.run(make("ucb1"), sim.bernoulli(n, seed=2), ROUNDS, [0], epsilon=eps)
    p = res.propensity[0, n:]  # after every arm was played once, ties are rare
    greedy, other = 1 - eps + eps / n, eps / n
    on_rule = np.isclose(p, greedy) | np.isclose(p, other)
    assert on_rule.mean() > 0.95, np.unique(np.round(p, 4))
    assert np.isclose(p, other).any() and np.isclose(p, greedy).any()


def test_exp3_learns_from_the_propensity_choose_returns():
    res = sim.run(make("exp3", horizon=float(ROUNDS)), sim.bernoulli(5, seed=0), ROUNDS, [0])
    p = res.propensity[0]
    assert np.isfinite(p).all() and (p > 0).all() and (p <= 1).all()
    assert np.ptp(p) > 0  # the distribution moved away from uniform as weights were learned


def test_lints_propensities_on_request():
    env = sim.linear_disjoint(4, 3, seed=0)
    fast = sim.run(make("lin_ts"), env, 200, [0])
    full = sim.run(make("lin_ts"), env, 200, [0], propensities=True)
    assert np.isnan(fast.propensity).all()
    assert ((full.propensity > 0) & (full.propensity <= 1)).all()
    np.testing.assert_array_equal(fast.arms, full.arms)  # skipping the integral changes nothing


@pytest.mark.parametrize(
    ("family", "hyper", "env", "field"),
    [
        ("linucb", {}, sim.bernoulli(3), "contextual"),
        ("beta_ts", {}, sim.gaussian(3), "real"),
        ("linucb", {"shared": True}, sim.linear_disjoint(3, 2), "per-arm"),
    ],
    ids=["contextual-on-plain", "beta-on-real", "shared-on-disjoint"],
)
def test_mismatched_policy_and_environment_are_refused(family, hyper, env, field):
    with pytest.raises(ValueError, match=field):
        sim.run(make(family, **hyper), env, 10, [0])


def test_non_contextual_policy_may_ignore_contexts():
    res = sim.run(make("ucb1"), sim.digits(), 1000, [0])
    accuracy = res.reward[0, -1] / 1000
    assert 0.05 < accuracy < 0.2, accuracy  # blind to the image: no better than one class


# --- slate environments through the runner ---------------------------------------------------


def test_ranked_runs_record_lists_propensities_and_regret():
    env = sim.cascade(8, 3, seed=1)
    res = sim.run(make("cascade_ucb1"), env, 200, seeds=range(2), epsilon=0.1)
    assert res.arms.shape == (2, 200, 3)
    # every list shows distinct items
    assert (np.sort(res.arms, axis=2)[:, :, 1:] != np.sort(res.arms, axis=2)[:, :, :-1]).all()
    # index families log the whole list's probability: at least the uniform share eps * 5!/8!
    assert (res.propensity >= 0.1 / (8 * 7 * 6) - 1e-12).all() and (res.propensity <= 1).all()
    assert (np.diff(res.regret, axis=1) >= -1e-12).all()  # pseudo-regret never decreases
    # Thompson lists finish their probabilities on the host: the scan logs none
    ts = sim.run(make("cascade_ts"), env, 50, seeds=[0])
    assert np.isnan(ts.propensity).all()


def test_ranked_and_single_arm_pairs_are_checked():
    with pytest.raises(ValueError, match="env: family 'cascade_ts' needs a slate"):
        sim.run(make("cascade_ts"), sim.bernoulli(5, seed=0), 10, seeds=[0])
    with pytest.raises(ValueError, match="env: family 'ucb1' needs a single-arm"):
        sim.run(make("ucb1"), sim.cascade(5, 2, seed=0), 10, seeds=[0])


def test_uniform_lists_on_slate_environments():
    env = sim.pbm(6, 2, seed=0)
    res = sim.uniform(env, 3000, seeds=[0])
    first = np.bincount(res.arms[0, :, 0], minlength=6) / 3000
    assert np.abs(first - 1 / 6).max() < 4 * np.sqrt(1 / 6 * 5 / 6 / 3000)
