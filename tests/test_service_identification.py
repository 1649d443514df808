"""Best-arm identification through the service: GetStats reports the arm a successive
elimination or sequential halving experiment settled on, and Select then plays only it."""

from __future__ import annotations

import pathlib
import time
from collections.abc import Iterator

import grpc
import pytest
from banditd.clients.ids import new_event_id
from banditd.service.config import ServerConfig
from banditd.service.server import start
from banditd.v1 import bandit_pb2 as pb
from banditd.v1 import bandit_pb2_grpc as pb_grpc
from google.protobuf import struct_pb2

NS = "identify"
ARMS = ("a", "b", "c")


@pytest.fixture
def stub(tmp_path: pathlib.Path) -> Iterator[pb_grpc.BanditServiceStub]:
    running = start(ServerConfig(port=0, data_dir=str(tmp_path)))
    channel = grpc.insecure_channel(f"127.0.0.1:{running.port}")
    try:
        yield pb_grpc.BanditServiceStub(channel)
    finally:
        channel.close()
        running.stop()
    assert running.learner.errors == 0


def create(stub: pb_grpc.BanditServiceStub, name: str, family: str, **hyper: float) -> None:
    e = pb.Experiment(namespace=NS, name=name, family=family)
    e.reward.kind = pb.REWARD_KIND_BINARY
    e.hyperparameters.CopyFrom(struct_pb2.Struct())
    e.hyperparameters.update(hyper)
    for a in ARMS:
        e.arms.add(id=a)
    stub.CreateExperiment(pb.CreateExperimentRequest(experiment=e))


def stats(stub: pb_grpc.BanditServiceStub, name: str) -> pb.GetStatsResponse:
    return stub.GetStats(pb.GetStatsRequest(namespace=NS, name=name))


def applied(stub: pb_grpc.BanditServiceStub, name: str, seq: int) -> None:
    deadline = time.monotonic() + 30
    while stats(stub, name).applied_watermark < seq:
        assert time.monotonic() < deadline, f"sequence {seq} never applied"
        time.sleep(0.005)


def select(stub: pb_grpc.BanditServiceStub, name: str, n: int = 1) -> list[pb.Decision]:
    items = [pb.SelectItem(event_id=new_event_id()) for _ in range(n)]
    return list(stub.Select(pb.SelectRequest(namespace=NS, name=name, items=items)).decisions)


def test_successive_elimination_reports_its_arm(stub: pb_grpc.BanditServiceStub) -> None:
    create(stub, "se", "successive_elimination", delta=0.05)
    assert not stats(stub, "se").HasField("identified")
    # 300 observations per arm: a always pays, b and c never. The radius at n = 300 is
    # sqrt(ln(4 * 3 * 300^2 / 0.05) / 300) = 0.237, so b's and c's UCB (0.237) fall below a's
    # LCB (0.763) and both are eliminated.
    obs = [pb.Observation(arm_ids=[a], rewards=[1.0 if a == "a" else 0.0]) for a in ARMS] * 300
    acks = stub.Update(pb.UpdateRequest(namespace=NS, name="se", observations=obs)).acks
    applied(stub, "se", max(a.sequence for a in acks))
    got = stats(stub, "se")
    assert got.HasField("identified")
    assert got.identified.arm_id == "a"
    assert got.identified.confidence == pytest.approx(0.95)
    assert "successive elimination" in got.identified.method
    decided = select(stub, "se", 50)
    assert {d.arm_ids[0] for d in decided} == {"a"}
    assert all(d.propensity == 1.0 for d in decided)


def test_sequential_halving_reports_its_survivor(stub: pb_grpc.BanditServiceStub) -> None:
    # 3 arms, budget 60: R = 2 rounds, 10 pulls per arm, then 15 for each of the best two.
    create(stub, "sh", "sequential_halving", budget=60)
    pulls = 0
    while not stats(stub, "sh").HasField("identified"):
        assert pulls < 60, "the budget is spent and nothing was identified"
        (d,) = select(stub, "sh")
        r = 1.0 if d.arm_ids[0] == "b" else 0.0
        req = pb.UpdateRequest(
            namespace=NS, name="sh", rewards=[pb.Reward(event_id=d.event_id, value=r)]
        )
        applied(stub, "sh", stub.Update(req).acks[0].sequence)
        pulls += 1
    got = stats(stub, "sh")
    assert got.identified.arm_id == "b"
    assert not got.identified.HasField("confidence")  # fixed budget: no confidence bound
    assert pulls == 10 * 3 + 15 * 2
    assert {d.arm_ids[0] for d in select(stub, "sh", 20)} == {"b"}


def test_other_families_identify_nothing(stub: pb_grpc.BanditServiceStub) -> None:
    create(stub, "ts", "beta_ts")
    (d,) = select(stub, "ts")
    stub.Update(
        pb.UpdateRequest(namespace=NS, name="ts", rewards=[pb.Reward(event_id=d.event_id, value=1)])
    )
    assert not stats(stub, "ts").HasField("identified")
