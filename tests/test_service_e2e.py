"""End to end: a real server subprocess, the Python client, banditd.sim environments.

For each family: create an experiment, drive its environment through Select/Update for 2,000
rounds, and check that it clearly beats uniform random and that the log holds exactly the
decisions and rewards the client sent. Also: restart restores experiments and their state.
"""

from __future__ import annotations

import pathlib

import numpy as np
import pytest
from banditd import sim
from banditd.clients import Client, Reward
from banditd.store.sql import SqlEventLog
from server_proc import ServerProcess

ROUNDS = 2000
PER_CALL = 20  # decisions per Select call; the learner catches up between calls

# family -> (hyperparameters, environment, reward kind)
CASES = {
    "beta_ts": ({}, lambda: sim.bernoulli(5, seed=1), "binary"),
    "ucb1": ({}, lambda: sim.bernoulli(5, seed=1), "binary"),
    "epsilon_greedy": ({}, lambda: sim.bernoulli(5, seed=1), "binary"),
    "exp3": ({"horizon": ROUNDS}, lambda: sim.bernoulli(5, seed=1), "binary"),
    "gaussian_ts": ({}, lambda: sim.gaussian(5, seed=2), "real"),
    "nig_ts": ({}, lambda: sim.gaussian(5, seed=2), "real"),
    "linucb": ({}, lambda: sim.linear_disjoint(5, 6, seed=3), "real"),
    "lin_ts": ({"alpha": 0.5}, lambda: sim.linear_disjoint(5, 6, seed=3), "real"),
    "linucb_shared": ({"shared": True}, lambda: sim.linear_per_arm(5, 6, seed=4), "real"),
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    srv = ServerProcess(tmp_path_factory.mktemp("e2e")).start()
    yield srv
    srv.stop()
    assert "Traceback" not in srv.log(), srv.log()


def drive(client: Client, name: str, env, T: int, seed: int = 0) -> tuple[float, float, int]:
    """(policy regret, uniform's expected regret, rewards sent) over T rounds."""
    real = sim.realize(env, T, seed)
    arms = [f"arm{i}" for i in range(env.n_arms)]
    regret = 0.0
    sent = 0
    for start in range(0, T, PER_CALL):
        sl = slice(start, min(start + PER_CALL, T))
        ctx = real.contexts[sl]
        kw: dict = {}
        if env.per_arm:
            kw["arm_features"] = [
                {a: ctx[j, i] for i, a in enumerate(arms)} for j in range(ctx.shape[0])
            ]
            contexts = ctx.shape[0]
        elif env.dim:
            contexts = ctx
        else:
            contexts = ctx.shape[0]
        decisions = client.select("e2e", name, contexts, **kw)
        rewards = []
        for j, d in enumerate(decisions):
            a = arms.index(d.arm_id)
            t = start + j
            regret += real.means[t].max() - real.means[t, a]
            rewards.append(Reward(d.event_id, float(real.rewards[t, a])))
        acks = client.update("e2e", name, rewards)
        assert all(ack.kind == "reward" for ack in acks)
        sent += len(acks)
    uniform = float((real.means.max(axis=1) - real.means.mean(axis=1)).sum())
    return regret, uniform, sent


@pytest.mark.parametrize("case", sorted(CASES))
def test_family_learns_through_the_service(server: ServerProcess, case: str) -> None:
    hyper, make_env, kind = CASES[case]
    family = case.removesuffix("_shared")
    env = make_env()
    with Client(server.target) as c:
        c.create_experiment(
            "e2e",
            case,
            family,
            [f"arm{i}" for i in range(env.n_arms)],
            hyperparameters=hyper,
            reward_kind=kind,
            dim=0 if env.per_arm else env.dim,
            arm_feature_dim=env.dim if env.per_arm else 0,
        )
        regret, uniform, sent = drive(c, case, env, ROUNDS)
        stats = c.stats("e2e", case)
    assert regret < 0.5 * uniform, f"{case}: regret {regret:.1f} vs uniform {uniform:.1f}"
    assert stats.decisions == ROUNDS
    assert stats.feedback.rewards == sent == ROUNDS
    log = SqlEventLog.from_url(f"sqlite:///{pathlib.Path(server.data_dir) / 'banditd.db'}")
    try:
        exp = log.get_experiment("e2e", case)
        assert exp is not None
        counts = log.counts(exp.id)
        assert counts.decisions == ROUNDS
        assert counts.feedback["reward"] == ROUNDS
        assert sum(counts.feedback.values()) == ROUNDS
    finally:
        log.close()


def test_restart_restores_experiments_and_state(tmp_path: pathlib.Path) -> None:
    srv = ServerProcess(tmp_path / "data").start()
    try:
        with Client(srv.target) as c:
            c.create_experiment("ns", "restart", "beta_ts", ["a", "b", "c"])
            rng = np.random.default_rng(0)
            for _ in range(10):
                ds = c.select("ns", "restart", 30)
                c.update(
                    "ns", "restart", [Reward(d.event_id, float(rng.random() < 0.5)) for d in ds]
                )
            before = c.stats("ns", "restart")
            exp_before = c.get_experiment("ns", "restart")
            replay = ds[0]
    finally:
        assert srv.stop() == 0
    srv.start()
    try:
        with Client(srv.target) as c:
            after = c.stats("ns", "restart")
            exp_after = c.get_experiment("ns", "restart")
            again = c.select("ns", "restart", None, event_ids=[replay.event_id])[0]
    finally:
        srv.stop()
    assert exp_after.arm_ids == exp_before.arm_ids
    assert after.decisions == before.decisions == 300
    assert after.feedback.rewards == before.feedback.rewards == 300
    # A clean stop applies every acknowledged reward: the restored version covers all of them.
    assert exp_after.version >= exp_before.version
    assert [a.mean_reward for a in after.arms] == [a.mean_reward for a in before.arms]
    assert again.replayed and again.arm_ids == replay.arm_ids
    assert again.propensity == replay.propensity
    assert "Traceback" not in srv.log()
