"""Ranked families (cascades, slates) end to end on an in-process server: Select returns an
ordered list with per-slot propensities, Update takes per-slot rewards, the learner applies
[B, k] lists (rewards, window defaults, observations), GetStats counts impressions and observed
slots, bad input is rejected without side effects, and recovery rebuilds the same state."""

from __future__ import annotations

import math
import os
import pathlib
import sqlite3
from typing import Any

import grpc
import numpy as np
import pytest
import sqlalchemy as sa
from banditd.clients import Client, Observation, Reward
from banditd.clients.ids import new_event_id
from banditd.service.config import ServerConfig
from banditd.service.registry import Registry
from banditd.service.server import start
from banditd.store.packing import unpack_f64_tuple, unpack_i32_tuple
from banditd.store.schema import decisions, feedback
from banditd.store.sql import SqlEventLog
from banditd.v1 import bandit_pb2 as pb
from banditd.v1 import bandit_pb2_grpc as pb_grpc
from fake_clock import FakeClock

ROOT = pathlib.Path(__file__).resolve().parent.parent
os.environ.setdefault("BANDITD_JAX_CACHE", str(ROOT / ".jax_cache"))  # the tests' shared cache

NS = "ranked"
ARMS = [f"item{i}" for i in range(8)]
WINDOW = 10.0


class Server:
    """An in-process server (state inspectable) with a fake clock, and a client on it."""

    def __init__(self, data_dir: pathlib.Path, clock: FakeClock, **cfg: Any) -> None:
        self.data_dir, self.clock, self.cfg = data_dir, clock, cfg
        self.start()

    def start(self) -> None:
        config = ServerConfig(port=0, data_dir=str(self.data_dir), **self.cfg)
        self.running = start(config, clock=self.clock)
        self.target = f"127.0.0.1:{self.running.port}"
        self.client = Client(self.target, retries=0)
        self.channel = grpc.insecure_channel(self.target)
        self.stub = pb_grpc.BanditServiceStub(self.channel)

    def stop(self) -> None:
        self.client.close()
        self.channel.close()
        self.running.stop()

    def rt(self, name: str) -> Any:
        return self.running.servicer.registry.get(NS, name)

    def stats(self, name: str) -> dict[str, np.ndarray]:
        return {k: np.array(v) for k, v in self.rt(name).state.stats.items()}

    def version(self, name: str) -> int:
        return int(self.rt(name).state.meta.version)

    def settle(self, name: str) -> None:
        """Write due defaults and apply every ready batch now (the learner thread would too)."""
        self.running.servicer.decisions.flush()
        self.running.learner.drain(self.rt(name))

    def create(self, name: str, family: str, **kw: Any) -> None:
        kw.setdefault("slate_size", 3)
        self.client.create_experiment(NS, name, family, kw.pop("arms", ARMS), **kw)

    def feedback_rows(self, name: str) -> list[tuple[str, tuple[float, ...], tuple[int, ...]]]:
        """(kind, slot rewards, chosen) of every feedback row, in sequence order."""
        eng = self.running.servicer.log.engine
        q = (
            sa.select(feedback.c.kind, feedback.c.slot_rewards, feedback.c.chosen)
            .where(feedback.c.experiment_id == self.rt(name).exp.id)
            .order_by(feedback.c.seq)
        )
        with eng.connect() as conn:
            return [
                (
                    k,
                    () if s is None else unpack_f64_tuple(bytes(s)),
                    () if c is None else unpack_i32_tuple(bytes(c)),
                )
                for k, s, c in conn.execute(q)
            ]

    def logged_chosen(self, name: str, event_id: str) -> tuple[tuple[int, ...], tuple[float, ...]]:
        eng = self.running.servicer.log.engine
        q = sa.select(decisions.c.chosen, decisions.c.slot_propensities).where(
            decisions.c.experiment_id == self.rt(name).exp.id, decisions.c.event_id == event_id
        )
        with eng.connect() as conn:
            c, p = conn.execute(q).one()
        return unpack_i32_tuple(bytes(c)), unpack_f64_tuple(bytes(p))


@pytest.fixture(scope="module")
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, clock: FakeClock):
    srv = Server(tmp_path_factory.mktemp("ranked"), clock)
    yield srv
    errors = srv.running.learner.errors
    srv.stop()
    assert errors == 0, "the learner thread failed (see the log)"


def slots_of(srv: Server, name: str, arm_ids: tuple[str, ...]) -> list[int]:
    return [srv.rt(name).slot_of[a] for a in arm_ids]


# --- Select ---------------------------------------------------------------------------------


def test_cascade_select_returns_an_ordered_list_with_slot_propensities(server: Server) -> None:
    server.create("sel", "cascade_ts")
    ids = [new_event_id() for _ in range(5)]
    ds = server.client.select(NS, "sel", 5, event_ids=ids)
    for d in ds:
        assert len(d.arm_ids) == 3 and len(set(d.arm_ids)) == 3
        assert set(d.arm_ids) <= set(ARMS)
        assert len(d.slot_propensities) == 3
        assert all(0.0 < p <= 1.0 for p in d.slot_propensities)
        assert d.propensity == pytest.approx(math.prod(d.slot_propensities), rel=1e-12)
        # fresh state: every item is alike, so each slot is uniform over the rest
        assert d.slot_propensities == pytest.approx([1 / 8, 1 / 7, 1 / 6], abs=5e-3)
    again = server.client.select(NS, "sel", 5, event_ids=ids)
    for d, a in zip(ds, again, strict=True):
        assert a.replayed and not d.replayed
        assert a.arm_ids == d.arm_ids
        assert a.slot_propensities == d.slot_propensities and a.propensity == d.propensity
    server.running.servicer.decisions.flush()
    chosen, props = server.logged_chosen("sel", ds[0].event_id)
    assert chosen == tuple(slots_of(server, "sel", ds[0].arm_ids))
    assert props == ds[0].slot_propensities


def test_eligible_lists_shorter_than_the_slate_are_rejected(server: Server) -> None:
    server.create("elig", "cascade_ucb1")
    with pytest.raises(grpc.RpcError) as err:
        server.stub.Select(
            pb.SelectRequest(
                namespace=NS,
                name="elig",
                items=[pb.SelectItem(eligible_arm_ids=["item0", "item1"])],
            )
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith("items[0].eligible_arm_ids:")
    (d,) = server.client.select(NS, "elig", 1, eligible=["item5", "item2", "item7"])
    assert sorted(d.arm_ids) == ["item2", "item5", "item7"]


def test_holdout_lists_are_uniform_ordered_subsets(server: Server) -> None:
    server.create("hold", "cascade_ucb1", holdout_fraction=0.5)
    ds = server.client.select(NS, "hold", 40)
    held = [d for d in ds if d.holdout]
    assert 5 < len(held) < 35
    for d in held:
        assert len(set(d.arm_ids)) == 3
        assert d.slot_propensities == pytest.approx([1 / 8, 1 / 7, 1 / 6], rel=1e-12)
    assert len({d.arm_ids for d in held}) > 1
    again = server.client.select(NS, "hold", 40, event_ids=[d.event_id for d in ds])
    assert [d.arm_ids for d in again] == [d.arm_ids for d in ds]


# --- Update and the learner -------------------------------------------------------------------


def test_cascade_slot_rewards_are_applied_per_slot(server: Server) -> None:
    server.create("apply", "cascade_ts")
    (d,) = server.client.select(NS, "apply", 1)
    v0 = server.version("apply")
    (ack,) = server.client.update(NS, "apply", [Reward(d.event_id, 1.0, slot_values=[0, 1, 0])])
    assert ack.kind == "reward"
    server.settle("apply")
    assert server.version("apply") == v0 + 1
    st = server.stats("apply")
    first, second, third = slots_of(server, "apply", d.arm_ids)
    n, c = np.zeros(8), np.zeros(8)
    n[[first, second]] = 1  # examined: the first two; the third is after the click
    c[second] = 1
    np.testing.assert_array_equal(st["n"][:8], n)
    np.testing.assert_array_equal(st["c"][:8], c)
    assert float(st["rounds"]) == 1
    assert server.feedback_rows("apply") == [("reward", (0.0, 1.0, 0.0), ())]
    # GetStats: impressions per arm, observed slots and clicks
    s = server.client.stats(NS, "apply")
    assert s.decisions == 1 and s.feedback.rewards == 1
    a1, a2, a3 = (s.arm(a) for a in d.arm_ids)
    assert (a1.decisions, a1.rewards, a1.mean_reward) == (1, 1, 0.0)
    assert (a2.decisions, a2.rewards, a2.mean_reward) == (1, 1, 1.0)
    assert (a3.decisions, a3.rewards) == (1, 0)
    assert sum(a.decisions for a in s.arms) == 3
    assert s.regret is None
    assert s.model_method.startswith("ranked family")
    assert s.version == server.version("apply")


def test_window_defaults_apply_to_every_slot(server: Server, clock: FakeClock) -> None:
    server.create("dflt", "cascade_ucb1", wait_window=WINDOW, default_reward=0.0)
    (d,) = server.client.select(NS, "dflt", 1)
    (r,) = server.client.select(NS, "dflt", 1)
    server.client.update(NS, "dflt", [Reward(r.event_id, 0.0, slot_values=[0, 0, 1])])
    clock.advance(WINDOW + 1)
    server.settle("dflt")
    st = server.stats("dflt")
    want_n, want_c = np.zeros(8), np.zeros(8)
    for s in slots_of(server, "dflt", d.arm_ids):  # a default 0: every slot examined, no click
        want_n[s] += 1
    rs = slots_of(server, "dflt", r.arm_ids)
    want_n[rs] += 1
    want_c[rs[2]] += 1
    np.testing.assert_array_equal(st["n"][:8], want_n)
    np.testing.assert_array_equal(st["c"][:8], want_c)
    kinds = sorted(k for k, _, _ in server.feedback_rows("dflt"))
    assert kinds == ["default", "reward"]
    s = server.client.stats(NS, "dflt")
    assert s.feedback.defaults == 1 and s.feedback.rewards == 1
    assert sum(a.rewards for a in s.arms) == 6


def test_observations_of_lists_are_applied(server: Server) -> None:
    server.create("obs", "cascade_ucb1")
    acks = server.client.update(
        NS,
        "obs",
        observations=[Observation(["item4", "item1", "item6"], [0, 0, 1])],
    )
    assert acks[0].kind == "observation"
    server.settle("obs")
    st = server.stats("obs")
    assert st["n"][[4, 1, 6]].tolist() == [1, 1, 1] and st["n"].sum() == 3
    assert st["c"][6] == 1 and st["c"].sum() == 1
    assert server.feedback_rows("obs") == [("observation", (0.0, 0.0, 1.0), (4, 1, 6))]
    s = server.client.stats(NS, "obs")
    assert s.feedback.observations == 1
    assert s.arm("item6").rewards == 1 and s.arm("item6").mean_reward == 1.0


def test_pbm_slate_round_trip(server: Server) -> None:
    server.create("pbm", "slate_pbm_ts", arms=ARMS[:6], hyperparameters={"positions": 4})
    (d,) = server.client.select(NS, "pbm", 1)
    assert len(d.arm_ids) == 3 and len(d.slot_propensities) == 3
    server.client.update(NS, "pbm", [Reward(d.event_id, 2.0, slot_values=[1, 0, 1])])
    server.settle("pbm")
    st = server.stats("pbm")
    views, clicks = np.zeros((8, 4)), np.zeros((8, 4))
    for j, s in enumerate(slots_of(server, "pbm", d.arm_ids)):  # PBM observes every slot
        views[s, j] = 1
    clicks[slots_of(server, "pbm", d.arm_ids)[0], 0] = 1
    clicks[slots_of(server, "pbm", d.arm_ids)[2], 2] = 1
    np.testing.assert_array_equal(st["views"], views)
    np.testing.assert_array_equal(st["clicks"], clicks)
    s = server.client.stats(NS, "pbm")
    assert sum(a.rewards for a in s.arms) == 3
    (d2,) = server.client.select(NS, "pbm", 1)  # selects on the learned state
    assert len(set(d2.arm_ids)) == 3


FEATS = {a: [float(i % 3 == 0), 0.1 * i] for i, a in enumerate(ARMS)}


@pytest.mark.parametrize("family", ["cascade_linucb", "slate_inslate_ts"])
def test_linear_ranked_round_trip_uses_the_logged_item_features(
    server: Server, family: str
) -> None:
    name = f"lin-{family}"
    server.create(name, family, arm_feature_dim=2, arm_features=FEATS)
    override = {"item3": [5.0, -1.0]}
    eligible = ["item3", "item0", "item7"]
    (d,) = server.client.select(NS, name, 1, eligible=eligible, arm_features=[override])
    assert sorted(d.arm_ids) == sorted(eligible)
    server.client.update(NS, name, [Reward(d.event_id, 0.0, slot_values=[0, 0, 0])])
    server.settle(name)
    st = server.stats(name)
    x = np.asarray([override.get(a, FEATS[a]) for a in d.arm_ids])
    np.testing.assert_allclose(st["G"], x.T @ x, rtol=1e-12)  # every slot observed (no click)
    np.testing.assert_array_equal(st["b"], np.zeros(2))
    assert st["n"][slots_of(server, name, d.arm_ids)].tolist() == [1, 1, 1]
    (d2,) = server.client.select(NS, name, 1)
    assert len(set(d2.arm_ids)) == 3
    s = server.client.stats(NS, name)  # contextual: no model summary, no crash
    assert s.decisions == 2 and sum(a.decisions for a in s.arms) == 6


def test_cascade_learns_the_attractive_items(server: Server) -> None:
    """300 decisions on a cascade click model over 12 items: items 0-2 are attractive (0.4), the
    others 0.1; the last 100 lists show the attractive items far more often than the first."""
    arms = [f"item{i}" for i in range(12)]
    server.create("learn", "cascade_ts", arms=arms)
    attract = np.full(12, 0.1)
    attract[:3] = 0.4
    rng = np.random.default_rng(7)
    good = []
    for t in range(30):
        ds = server.client.select(NS, "learn", 10, event_ids=[f"learn-{t}-{i}" for i in range(10)])
        rewards = []
        for d in ds:
            items = [arms.index(a) for a in d.arm_ids]
            good.append(sum(i < 3 for i in items))
            clicks = [0.0] * 3
            for j, i in enumerate(items):  # scan top-down, click the first attractive item
                if rng.random() < attract[i]:
                    clicks[j] = 1.0
                    break
            rewards.append(Reward(d.event_id, max(clicks), slot_values=clicks))
        server.client.update(NS, "learn", rewards)
        server.settle("learn")
    first, last = sum(good[:100]), sum(good[-100:])
    # uniformly random lists show 0.75 attractive items on average, the best lists 3
    assert last > 220 and last > first + 80, (first, last)
    s = server.client.stats(NS, "learn")
    assert s.decisions == 300 and s.feedback.rewards == 300
    best = sorted(s.arms, key=lambda a: -a.decisions)[:3]
    assert {a.arm_id for a in best} == {"item0", "item1", "item2"}
    assert s.prob_best_draws > 0


# --- bad input --------------------------------------------------------------------------------


def _bad_env(server: Server) -> dict[str, str]:
    """Experiments for the bad-input cases, and one decided event of each."""
    if server.rt("bad") is None:
        server.create("bad", "cascade_ucb1")
        server.create("bad-pbm", "slate_pbm_ts", hyperparameters={"positions": 3})
        server.client.create_experiment(NS, "bad-single", "beta_ts", ["a", "b"])
    ev = {}
    for name in ("bad", "bad-pbm", "bad-single"):
        (d,) = server.client.select(NS, name, 1)
        ev[name] = d.event_id
    server.running.servicer.decisions.flush()
    return ev


def _snapshot(server: Server, name: str) -> tuple:
    s = server.client.stats(NS, name)
    exp = server.client.get_experiment(NS, name)
    return (
        exp.version,
        exp.revision,
        s.decisions,
        s.feedback,
        len(server.feedback_rows(name)),
        {k: v.tolist() for k, v in server.stats(name).items()},
    )


def _exp(name: str, family: str, n_arms: int, slate: int, **kw: Any) -> pb.Experiment:
    e = pb.Experiment(namespace=NS, name=name, family=family, slate_size=slate, **kw)
    e.reward.kind = pb.REWARD_KIND_BINARY
    for i in range(n_arms):
        e.arms.add(id=f"a{i}")
    return e


def _upd(name: str, *rewards: pb.Reward, observations: tuple = ()) -> pb.UpdateRequest:
    return pb.UpdateRequest(
        namespace=NS, name=name, rewards=list(rewards), observations=list(observations)
    )


BAD: dict[str, tuple[str, Any, str]] = {
    "missing slot_values": (
        "bad",
        lambda ev: _upd("bad", pb.Reward(event_id=ev["bad"], value=1.0)),
        "rewards[0].slot_values",
    ),
    "short slot_values": (
        "bad",
        lambda ev: _upd("bad", pb.Reward(event_id=ev["bad"], slot_values=[0, 1])),
        "rewards[0].slot_values",
    ),
    "long slot_values": (
        "bad",
        lambda ev: _upd("bad", pb.Reward(event_id=ev["bad"], slot_values=[0, 0, 0, 1])),
        "rewards[0].slot_values",
    ),
    "non-binary slot value": (
        "bad",
        lambda ev: _upd("bad", pb.Reward(event_id=ev["bad"], slot_values=[0, 0.5, 0])),
        "rewards[0].slot_values[1]",
    ),
    "NaN slot value": (
        "bad",
        lambda ev: _upd("bad", pb.Reward(event_id=ev["bad"], slot_values=[0, 0, float("nan")])),
        "rewards[0].slot_values[2]",
    ),
    "second reward bad, first fine": (
        "bad",
        lambda ev: _upd(
            "bad",
            pb.Reward(event_id=ev["bad"], slot_values=[0, 1, 0]),
            pb.Reward(event_id=ev["bad"], slot_values=[1]),
        ),
        "rewards[1].slot_values",
    ),
    "slot_values on a single-arm family": (
        "bad-single",
        lambda ev: _upd(
            "bad-single", pb.Reward(event_id=ev["bad-single"], value=1, slot_values=[1])
        ),
        "rewards[0].slot_values",
    ),
    "observation repeats an arm": (
        "bad",
        lambda ev: _upd(
            "bad", observations=(pb.Observation(arm_ids=["item1", "item1"], rewards=[0, 1]),)
        ),
        "observations[0].arm_ids[1]",
    ),
    "observation reward count": (
        "bad",
        lambda ev: _upd(
            "bad", observations=(pb.Observation(arm_ids=["item1", "item2"], rewards=[0]),)
        ),
        "observations[0].rewards",
    ),
    "observation non-binary": (
        "bad",
        lambda ev: _upd(
            "bad", observations=(pb.Observation(arm_ids=["item1", "item2"], rewards=[0, 2]),)
        ),
        "observations[0].rewards[1]",
    ),
    "observation longer than the PBM positions": (
        "bad-pbm",
        lambda ev: _upd(
            "bad-pbm", observations=(pb.Observation(arm_ids=ARMS[:4], rewards=[0, 0, 0, 0]),)
        ),
        "observations[0].arm_ids",
    ),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_ranked_feedback_is_rejected_without_side_effects(server: Server, case: str) -> None:
    name, make, field = BAD[case]
    ev = _bad_env(server)
    before = _snapshot(server, name)
    with pytest.raises(grpc.RpcError) as err:
        server.stub.Update(make(ev))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
    assert err.value.details().startswith(f"{field}:"), err.value.details()
    server.settle(name)
    assert _snapshot(server, name) == before


CREATE_BAD: dict[str, tuple[pb.Experiment, str]] = {
    "slate larger than the arms": (_exp("c1", "cascade_ts", 3, 4), "experiment.slate_size"),
    "slate larger than the PBM positions": (
        _exp("c2", "slate_pbm_ts", 6, 4),
        "experiment.slate_size",
    ),
    "linear cascade without item features": (
        _exp("c3", "cascade_linucb", 6, 2),
        "experiment.feature_schema.arm_feature_dimension",
    ),
}


@pytest.mark.parametrize("case", list(CREATE_BAD))
def test_bad_ranked_experiments_are_rejected(server: Server, case: str) -> None:
    e, field = CREATE_BAD[case]
    if e.family == "slate_pbm_ts":
        e.hyperparameters.update({"positions": 3})
    if e.family == "cascade_linucb":
        e.feature_schema.dimension = 2
    before = [x.name for x in server.client.list_experiments(NS)]
    with pytest.raises(grpc.RpcError) as err:
        server.stub.CreateExperiment(pb.CreateExperimentRequest(experiment=e))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
    assert err.value.details().startswith(f"{field}:"), err.value.details()
    assert [x.name for x in server.client.list_experiments(NS)] == before


def test_pbm_positions_cannot_shrink_below_the_slate(server: Server) -> None:
    server.create("shrink", "slate_pbm_ts", hyperparameters={"positions": 3})
    with pytest.raises(grpc.RpcError) as err:
        server.stub.UpdateExperiment(
            pb.UpdateExperimentRequest(
                namespace=NS, name="shrink", hyperparameters=_struct({"positions": 2})
            )
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith("hyperparameters.positions:")
    assert server.client.get_experiment(NS, "shrink").revision == 1


def _struct(values: dict[str, Any]) -> Any:
    from google.protobuf import struct_pb2

    s = struct_pb2.Struct()
    s.update(values)
    return s


def test_unappliable_logged_rows_are_consumed_not_fatal(server: Server) -> None:
    """A row the policy cannot learn from (here: per-slot rewards of the wrong length, written
    straight to the log) is consumed and counted; the rest of its batch is applied."""
    from banditd.service import registry as reg
    from banditd.store.rows import Feedback

    server.create("corrupt", "cascade_ucb1")
    a, b = server.client.select(NS, "corrupt", 2)
    server.running.servicer.decisions.flush()
    rt = server.rt("corrupt")
    v0 = server.version("corrupt")
    before = reg.UNAPPLIABLE[rt.exp.id]
    server.running.servicer.log.insert_feedback(
        [
            Feedback(rt.exp.id, "reward", 1.0, event_id=a.event_id, slot_rewards=(1.0,)),
            Feedback(rt.exp.id, "reward", 1.0, event_id=b.event_id, slot_rewards=(1.0, 0, 0)),
        ]
    )
    server.settle("corrupt")
    assert server.version("corrupt") == v0 + 1
    assert reg.UNAPPLIABLE[rt.exp.id] == before + 1
    st = server.stats("corrupt")
    assert st["n"].sum() == 1 and st["c"][server.rt("corrupt").slot_of[b.arm_ids[0]]] == 1
    assert server.running.learner.errors == 0


# --- recovery ---------------------------------------------------------------------------------


def _drive(srv: Server, name: str, rounds: int, seed: int, **select_kw: Any) -> list[Any]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(rounds):
        ds = srv.client.select(NS, name, 6, **select_kw)
        rewards = []
        for d in ds[:5]:  # the sixth waits for its window's default
            clicks = [0.0] * len(d.arm_ids)
            j = int(rng.integers(len(d.arm_ids) + 1))
            if j < len(clicks):
                clicks[j] = 1.0
            rewards.append(Reward(d.event_id, max(clicks), slot_values=clicks))
        srv.client.update(NS, name, rewards)
        srv.settle(name)
        out.extend(ds)
    return out


def test_restart_and_replay_rebuild_the_ranked_state(tmp_path: pathlib.Path) -> None:
    clock = FakeClock()
    srv = Server(tmp_path / "data", clock, checkpoint_every=1000)
    names = {"r-ts": "cascade_ts", "r-pbm": "slate_pbm_ts", "r-lin": "cascade_linucb"}
    try:
        for name, family in names.items():
            kw: dict[str, Any] = dict(wait_window=WINDOW, default_reward=0.0)
            if family == "cascade_linucb":
                kw.update(arm_feature_dim=2, arm_features=FEATS)
            if family == "slate_pbm_ts":
                kw["hyperparameters"] = {"positions": 3}
            srv.create(name, family, **kw)
        decided = {}
        for seed, name in enumerate(names):
            decided[name] = _drive(srv, name, 4, seed)
            srv.client.update(  # lists of another length go into the same batches
                NS,
                name,
                observations=[
                    Observation(["item2", "item5", "item0"], [0, 1, 0]),
                    Observation(["item7", "item3"], [0, 0]),
                ],
            )
        clock.advance(WINDOW + 1)  # the unrewarded decisions get their defaults
        for name in names:
            srv.settle(name)
            assert srv.client.stats(NS, name).feedback.defaults == 4
        live = {name: srv.stats(name) for name in names}
        versions = {name: srv.version(name) for name in names}
        # Replay: a fresh registry on a copy of the log (no checkpoint yet) re-applies every
        # recorded batch through apply_batch.
        copy = tmp_path / "copy.db"
        src = sqlite3.connect(str(tmp_path / "data" / "banditd.db"))
        dst = sqlite3.connect(str(copy))
        src.backup(dst)
        src.close()
        dst.close()
        log_ = SqlEventLog.from_url(f"sqlite:///{copy}")
        try:
            reg = Registry(log_)
            reg.load_all()
            replayed = {rt.exp.name: rt for rt in reg.all()}
        finally:
            log_.close()
        for name in names:
            rt = replayed[name]
            assert int(rt.state.meta.version) == versions[name]
            _same_stats(rt.state.stats, live[name], f"replay of {name}")
    finally:
        srv.stop()
    srv.start()  # a clean stop checkpointed: the restart loads it
    try:
        for name in names:
            assert srv.version(name) == versions[name]
            _same_stats(srv.rt(name).state.stats, live[name], f"restart of {name}")
            d = decided[name][0]
            (again,) = srv.client.select(NS, name, 1, event_ids=[d.event_id])
            assert again.replayed and again.arm_ids == d.arm_ids
            assert again.slot_propensities == d.slot_propensities
    finally:
        srv.stop()


def _same_stats(got: Any, want: dict[str, np.ndarray], what: str) -> None:
    assert set(got) == set(want), what
    for k, w in want.items():
        np.testing.assert_array_equal(np.asarray(got[k]), w, err_msg=f"{what}: {k}")


# --- per-arm sums of ranked experiments on both backends ---------------------------------------

PG_SERVER = "postgresql://postgres@127.0.0.1:5432"


@pytest.fixture(params=["sqlite", "postgresql"])
def sql_log(request: pytest.FixtureRequest, tmp_path: pathlib.Path):
    import uuid

    from banditd.store import migrate

    name = ""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/banditd.db"
    else:
        import psycopg

        try:
            psycopg.connect(f"{PG_SERVER}/postgres", connect_timeout=3).close()
        except Exception as e:  # noqa: BLE001 - any failure to connect means "skip"
            pytest.skip(f"PostgreSQL at {PG_SERVER} unreachable ({e.__class__.__name__})")
        name = f"banditd_ranked_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{name}"')
        url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    try:
        migrate.upgrade(url)
        log = SqlEventLog.from_url(url)
        yield log
        log.close()
    finally:
        if name:
            with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True) as c:
                c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.mark.parametrize("observe", ["cascade", "all"])
def test_ranked_arm_sums_count_impressions_and_observed_slots(
    sql_log: SqlEventLog, observe: str
) -> None:
    from banditd.service.stats import ranked_arms
    from banditd.store.rows import ArmSpec, Decision, Feedback, RevisionSpec

    exp = sql_log.create_experiment(
        "ns",
        "sums",
        config={"reward": {"kind": "binary"}},
        revision=RevisionSpec(1, "cascade_ts", {}),
        arms=[ArmSpec(f"a{i}") for i in range(5)],
    )
    rng = np.random.default_rng(3)
    n = 200
    lists = [tuple(int(v) for v in rng.permutation(5)[:3]) for _ in range(n)]
    hold = rng.random(n) < 0.2
    sql_log.insert_decisions(
        [
            Decision(
                exp.id, f"e{i}", 1, 0, lists[i], (0.2, 0.25, 1 / 3), 1000.0, holdout=bool(hold[i])
            )
            for i in range(n)
        ]
    )
    clicks = rng.random((n, 3)) < 0.3
    rewarded = rng.random(n) < 0.7  # the rest get a default 0
    fb = []
    for i in range(n):
        if rewarded[i]:
            fb.append(
                Feedback(
                    exp.id,
                    "reward",
                    float(clicks[i].any()),
                    event_id=f"e{i}",
                    slot_rewards=tuple(float(c) for c in clicks[i]),
                )
            )
        else:
            fb.append(Feedback(exp.id, "default", 0.0, event_id=f"e{i}"))
    fb.append(Feedback(exp.id, "duplicate", 1.0, event_id="e0", slot_rewards=(1.0, 1.0, 1.0)))
    fb.append(Feedback(exp.id, "observation", 1.0, chosen=(4, 3), slot_rewards=(0.0, 1.0)))
    sql_log.insert_feedback(fb)
    want_d = np.zeros(5, int)
    want_h = np.zeros(5, int)
    want_n = np.zeros(5, int)
    want_s = np.zeros(5)
    for i in range(n):
        values = clicks[i].astype(float) if rewarded[i] else np.zeros(3)
        for slot in lists[i]:
            want_d[slot] += 1
            want_h[slot] += int(hold[i])
        for slot, v in zip(lists[i], values, strict=True):
            want_n[slot] += 1
            want_s[slot] += v
            if observe == "cascade" and v > 0:
                break
    want_n[[4, 3]] += 1
    want_s[3] += 1
    got = ranked_arms(sql_log.engine, exp.id, observe)
    for slot in range(5):
        a = got[slot]
        assert (a.decisions, a.holdout_decisions) == (want_d[slot], want_h[slot])
        assert a.rewards.n == want_n[slot]
        assert a.rewards.total == pytest.approx(want_s[slot])
        assert a.rewards.sumsq == pytest.approx(want_s[slot])  # clicks: v * v == v
