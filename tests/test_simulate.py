"""``banditd simulate`` (banditd.clients.simulate): banditd.sim environments driven through the
client against an in-process server, once through the typer CLI; the environment steps replay
``banditd.sim``'s rounds; the slate baselines are exact; bad input fails with a clear message."""

from __future__ import annotations

import itertools
import json
import os
import pathlib
import sys
from collections.abc import Iterator

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from banditd import sim
from banditd.clients import Client
from banditd.clients import cli as cli_mod
from banditd.clients import simulate as simulation
from banditd.service.config import ServerConfig
from banditd.service.server import start
from typer.testing import CliRunner

ROOT = pathlib.Path(__file__).resolve().parent.parent
os.environ.setdefault("BANDITD_JAX_CACHE", str(ROOT / ".jax_cache"))  # the tests' shared cache

runner = CliRunner()


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    running = start(ServerConfig(port=0, data_dir=str(tmp_path_factory.mktemp("simulate"))))
    try:
        yield f"127.0.0.1:{running.port}"
    finally:
        running.stop()


@pytest.fixture
def client(target: str) -> Iterator[Client]:
    with Client(target) as c:
        yield c


# ---------------------------------------------------------------------------------------------
# Through the server


def test_bernoulli_beta_ts_beats_uniform_and_the_server_saw_every_round(client: Client) -> None:
    res = simulation.simulate(client, "bernoulli", arms=5, rounds=1500, batch=30, name="bern")
    assert (res.family, res.created, res.interrupted) == ("beta_ts", True, False)
    assert res.rounds == res.decisions == res.rewards == 1500
    assert res.cumulative_regret < 0.5 * res.uniform_regret, res.summary()
    means = np.asarray(sim.bernoulli(5, seed=0).means)
    assert res.uniform_regret == pytest.approx(1500 * (means.max() - means.mean()))
    assert len(res.select_seconds) == 50  # 1,500 rounds in batches of 30
    stats = client.stats("default", "bern")
    assert stats.decisions == 1500
    assert stats.feedback.rewards == 1500
    assert sum(a.decisions for a in stats.arms) == 1500
    # The rewards the server stored are the ones the environment paid.
    stored = sum(a.mean_reward * a.rewards for a in stats.arms)
    assert stored == pytest.approx(res.cumulative_reward)
    s = res.summary()
    assert s["decisions_per_s"] > 0 and 0 < s["select_p50_ms"] <= s["select_p99_ms"]


def test_ranked_env_sends_per_slot_rewards(client: Client) -> None:
    res = simulation.simulate(client, "cascade", arms=8, slots=3, rounds=200, batch=50)
    assert (res.family, res.name) == ("cascade_ts", "sim-cascade-cascade_ts")
    assert res.rounds == res.decisions == res.rewards == 200
    info = client.get_experiment("default", res.name)
    assert info.slate_size == 3
    stats = client.stats("default", res.name)
    assert stats.decisions == 200 and stats.feedback.rewards == 200
    assert res.cumulative_regret >= 0 and res.uniform_regret > 0
    assert set(np.unique(res.reward)) <= {0.0, 1.0}  # a cascade pays at most one click


def test_ctrl_c_stops_after_the_batch_and_keeps_the_rounds_so_far(client: Client) -> None:
    seen: list[int] = []

    def progress(s: simulation.Snapshot) -> None:
        seen.append(s.rounds)
        if len(seen) == 3:
            raise KeyboardInterrupt

    res = simulation.simulate(
        client, "bernoulli", rounds=1000, batch=25, name="interrupted", progress=progress
    )
    assert res.interrupted and seen == [0, 25, 50]
    assert res.rounds == res.decisions == res.rewards == 50
    assert res.summary()["interrupted"] is True
    stats = client.stats("default", "interrupted")
    assert stats.decisions == 50 and stats.feedback.rewards == 50


def test_cli_json_plot_and_reuse(target: str, client: Client, tmp_path: pathlib.Path) -> None:
    png = tmp_path / "regret.png"
    args = ["simulate", "bernoulli", "--arms", "4", "--rounds", "200", "--batch", "40"]
    args += ["--name", "cli", "--target", target, "--json"]
    first = runner.invoke(cli_mod.app, [*args, "--plot", str(png)])
    assert first.exit_code == 0, first.output
    out = json.loads(first.stdout)
    assert (out["rounds"], out["decisions"], out["rewards"], out["created"]) == (
        200,
        200,
        200,
        True,
    )
    assert out["experiment"] == "default/cli" and out["family"] == "beta_ts"
    assert png.stat().st_size > 1000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    again = runner.invoke(cli_mod.app, args)
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["created"] is False
    assert client.stats("default", "cli").decisions == 400  # the same experiment, reused

    other = runner.invoke(cli_mod.app, [*args[:3], "6", *args[4:]])
    assert other.exit_code == 1
    assert "default/cli exists and does not match" in other.stderr
    assert "active arms" in other.stderr
    assert client.stats("default", "cli").decisions == 400


def test_cli_table(target: str) -> None:
    result = runner.invoke(
        cli_mod.app,
        ["simulate", "bernoulli", "--rounds", "60", "--batch", "30", "--target", target],
        env={"COLUMNS": "120"},
    )
    assert result.exit_code == 0, result.output
    for label in ("cumulative reward", "cumulative regret", "uniform random regret", "p50"):
        assert label in result.stdout
    assert "default/sim-bernoulli-beta_ts" in result.stdout


# ---------------------------------------------------------------------------------------------
# No server needed


def test_unknown_env_names_it_and_the_known_ones() -> None:
    result = runner.invoke(cli_mod.app, ["simulate", "nosuchenv", "--target", "127.0.0.1:1"])
    assert result.exit_code == 1
    assert "unknown environment 'nosuchenv'" in result.stderr
    assert all(name in result.stderr for name in simulation.ENVS)


def test_help_lists_every_env() -> None:
    result = runner.invoke(cli_mod.app, ["simulate", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    text = " ".join(result.stdout.split())
    assert all(name in text for name in simulation.ENVS)


def test_plot_without_matplotlib_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    result = runner.invoke(
        cli_mod.app, ["simulate", "bernoulli", "--plot", "x.png", "--target", "127.0.0.1:1"]
    )
    assert result.exit_code == 1
    assert "--plot needs matplotlib (pip install matplotlib)" in result.stderr


@pytest.mark.parametrize(
    ("env", "kw", "message"),
    [
        ("cascade", {"family": "beta_ts"}, "needs one arm per round"),
        ("bernoulli", {"family": "cascade_ts"}, "needs a ranked (slate) environment"),
        ("bernoulli", {"family": "linucb"}, "'linucb' is contextual; 'bernoulli' has no context"),
        ("pbm", {"family": "cascade_linucb"}, "has no context (give it features with --dim)"),
        ("linear_per_arm", {"family": "rff_ucb"}, "has per-arm features"),
        ("bernoulli", {"slots": 3}, "--slots: environment 'bernoulli' does not take it"),
        ("digits", {"arms": 4}, "--arms: digits has 10 arms"),
        ("bernoulli", {"family": "nope"}, "unknown policy family 'nope'"),
    ],
)
def test_plan_rejects_what_cannot_work(env: str, kw: dict, message: str) -> None:
    with pytest.raises(ValueError) as e:
        simulation.plan(env, **kw)
    assert message in str(e.value)


def test_plans_map_each_env_onto_an_experiment() -> None:
    p = simulation.plan("linear_per_arm", arms=3, dim=4)
    assert (p.family, p.hyper, p.context) == ("linucb", {"shared": True}, "per_arm")
    assert (p.dim, p.arm_feature_dim, p.arm_ids) == (0, 4, ("arm-0", "arm-1", "arm-2"))
    p = simulation.plan("linear_disjoint", dim=5)
    assert (p.family, p.context, p.dim, p.arm_feature_dim) == ("linucb", "shared", 5, 0)
    p = simulation.plan("cascade", arms=6, slots=2, dim=3)
    assert (p.family, p.context, p.slate_size, p.arm_feature_dim) == (
        "cascade_linucb",
        "static",
        2,
        3,
    )
    assert p.arm_features is not None and p.arm_features.shape == (6, 3)
    p = simulation.plan("pbm", hyper={"prior_a": 2.0})
    assert (p.family, p.hyper, p.slate_size, p.context) == (
        "slate_pbm_ts",
        {"prior_a": 2.0},
        4,
        "none",
    )
    p = simulation.plan("digits", family="beta_ts")  # a non-contextual family ignores contexts
    assert (p.context, p.dim, p.reward_kind) == ("none", 0, "binary")


def test_env_steps_replay_the_simulator_rounds() -> None:
    """Round t of a simulation is round t of banditd.sim with the same seed: contexts, means and
    every arm's reward match ``sim.realize``."""
    env = sim.linear_disjoint(4, 3, seed=5)
    real = sim.realize(env, 12, seed=7)
    key = jax.random.PRNGKey(7)
    ts = jnp.arange(12)
    ctx, means, uniform = simulation._observe(env, key, ts)
    np.testing.assert_allclose(ctx, real.contexts)
    np.testing.assert_allclose(means, real.means)
    np.testing.assert_allclose(uniform, real.means.max(1) - real.means.mean(1))
    arms = np.arange(12) % 4
    r, per_slot, gap = simulation._outcome(env, key, ts, means, jnp.asarray(arms))
    np.testing.assert_allclose(r, real.rewards[np.arange(12), arms])
    np.testing.assert_allclose(per_slot[:, 0], r)
    np.testing.assert_allclose(gap, real.means.max(1) - real.means[np.arange(12), arms])


@pytest.mark.parametrize(
    "env",
    [
        sim.cascade(6, 3, attraction=[0.1, 0.3, 0.5, 0.7, 0.2, 0.4]),
        sim.pbm(6, 3, seed=1, kappa=[1.0, 0.6, 0.3]),
    ],
    ids=["cascade", "pbm"],
)
def test_uniform_slate_baseline_is_exact(env) -> None:
    """The uniform list's expected regret, against the average over every ordered list."""
    means = env.attraction
    lists = jnp.asarray(list(itertools.permutations(range(6), 3)))
    values = jax.vmap(lambda a: env.slate_value(means, a))(lists)
    want = env.best_value(means) - values.mean()
    _, _, got = simulation._observe(env, jax.random.PRNGKey(0), jnp.arange(2))
    np.testing.assert_allclose(got, [want, want], rtol=1e-12)
