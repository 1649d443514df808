"""Experiment lifecycle through the service: arms, pause, epsilon, revisions, holdout,
observations and per-arm features."""

from __future__ import annotations

import numpy as np
import pytest
from banditd.clients import Client, Observation, Reward
from banditd.clients.errors import BanditdError
from server_proc import ServerProcess


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory):
    srv = ServerProcess(tmp_path_factory.mktemp("lifecycle")).start()
    with Client(srv.target) as c:
        yield c
    srv.stop()
    assert "Traceback" not in srv.log(), srv.log()


def wait_version(c: Client, ns: str, name: str, at_least: int, timeout: float = 30.0) -> int:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = c.stats(ns, name).version
        if v >= at_least:
            return v
        time.sleep(0.02)
    raise AssertionError(f"version stayed below {at_least}")


def test_add_and_retire_arms(client: Client) -> None:
    client.create_experiment("life", "arms", "ucb1", ["a", "b"])
    upd = client.update_experiment("life", "arms", add_arms=["c", "d"], retire_arms=["a"])
    assert not upd.new_revision
    info = client.get_experiment("life", "arms")
    assert info.arm_ids == ("a", "b", "c", "d")
    assert info.active_arm_ids == ("b", "c", "d")
    chosen = {d.arm_id for d in client.select("life", "arms", 200)}
    assert "a" not in chosen and chosen == {"b", "c", "d"}  # ucb1 tries unplayed arms first
    with pytest.raises(BanditdError) as e:
        client.select("life", "arms", 1, eligible=[["a", "b"]])
    assert e.value.code.name == "INVALID_ARGUMENT" and "eligible_arm_ids[0]" in str(e.value)


def test_pause_and_resume(client: Client) -> None:
    client.create_experiment("life", "pause", "beta_ts", ["x", "y"])
    client.update_experiment("life", "pause", status="paused")
    with pytest.raises(BanditdError) as e:
        client.select("life", "pause", 1)
    assert e.value.code.name == "FAILED_PRECONDITION"
    client.update_experiment("life", "pause", status="active")
    assert len(client.select("life", "pause", 3)) == 3


def test_epsilon_in_place_changes_propensities(client: Client) -> None:
    client.create_experiment("life", "eps", "linucb", ["a", "b", "c", "d"], dim=2,
                             reward_kind="real")
    x = np.array([[1.0, 0.0]])
    before = client.select("life", "eps", x)[0]
    upd = client.update_experiment("life", "eps", epsilon=0.2)
    assert not upd.new_revision and upd.experiment.epsilon == 0.2
    after = client.select("life", "eps", x)[0]
    # All four arms tie on a fresh model: (1 - eps)/4 + eps/4 = 1/4 either way, so the ties
    # share it; what epsilon changes is visible once one arm leads.
    assert before.propensity == pytest.approx(0.25) and after.propensity == pytest.approx(0.25)
    obs = [Observation(["a"], [1.0], context=[1.0, 0.0]) for _ in range(5)]
    client.update("life", "eps", observations=obs)
    wait_version(client, "life", "eps", 1)
    d = client.select("life", "eps", x)[0]
    expected = {"a": 0.8 + 0.05}
    assert d.propensity == pytest.approx(expected.get(d.arm_id, 0.05))


def test_identity_change_makes_a_new_revision(client: Client) -> None:
    client.create_experiment("life", "rev", "linucb", ["a", "b"], dim=2, reward_kind="real")
    ds = client.select("life", "rev", np.ones((4, 2)))
    client.update("life", "rev", [Reward(d.event_id, 1.0) for d in ds])
    wait_version(client, "life", "rev", 1)
    upd = client.update_experiment("life", "rev", hyperparameters={"alpha": 2.0})
    assert upd.new_revision and upd.experiment.revision == 2
    assert upd.experiment.hyperparameters["alpha"] == 2.0
    d = client.select("life", "rev", np.ones((1, 2)))[0]
    assert d.revision == 2
    # A non-identity setting (serving dtype) changes in place.
    upd2 = client.update_experiment("life", "rev", hyperparameters={"serving_dtype": "float32"})
    assert not upd2.new_revision and upd2.experiment.revision == 2
    # Rewards for revision-1 decisions are logged but do not train revision 2.
    stats = client.stats("life", "rev")
    assert stats.revision == 2 and stats.feedback.rewards == 4


def test_holdout_is_uniform_sticky_and_does_not_train(client: Client) -> None:
    client.create_experiment("life", "hold", "ucb1", ["a", "b", "c"], holdout_fraction=0.5)
    units = [f"user-{i}" for i in range(400)]
    ds = client.select("life", "hold", len(units), unit_ids=units)
    held = [d for d in ds if d.holdout]
    assert 140 < len(held) < 260  # Binomial(400, 0.5): far outside 6 sigma otherwise
    assert all(d.propensity == pytest.approx(1 / 3) for d in held)
    again = client.select("life", "hold", len(units), unit_ids=units)
    assert [d.holdout for d in again] == [d.holdout for d in ds]  # sticky per unit
    client.update("life", "hold", [Reward(d.event_id, 1.0) for d in held])
    v = wait_version(client, "life", "hold", 1)
    stats = client.stats("life", "hold")
    assert stats.holdout_decisions == 2 * len(held)
    # Holdout rewards were consumed (version moved) but trained nothing: UCB1 still sees every
    # arm as unplayed, so all three tie.
    d = client.select("life", "hold", 1, unit_ids=[next(u for u, x in zip(units, ds, strict=True)
                                                        if not x.holdout)])[0]
    assert v >= 1 and d.propensity == pytest.approx(1 / 3)


def test_per_arm_features_and_observations(client: Client) -> None:
    client.create_experiment("life", "feat", "linucb", ["a", "b"], arm_feature_dim=2,
                             hyperparameters={"shared": True, "alpha": 0.0},
                             reward_kind="real", arm_features={"a": [1.0, 0.0], "b": [0.0, 1.0]})
    obs = [Observation(["b"], [1.0]) for _ in range(10)] + [
        Observation(["a"], [0.0]) for _ in range(10)]
    acks = client.update("life", "feat", observations=obs)
    assert [a.kind for a in acks] == ["observation"] * 20
    wait_version(client, "life", "feat", 1)
    # greedy (alpha 0) on static features picks b; per-request features can flip it
    assert client.select("life", "feat", 1)[0].arm_id == "b"
    flipped = client.select("life", "feat", 1,
                            arm_features=[{"a": [0.0, 1.0], "b": [1.0, 0.0]}])[0]
    assert flipped.arm_id == "a"
