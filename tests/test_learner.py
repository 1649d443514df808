"""The learner thread of an in-process server: rewards arriving within ``learner_linger_ms`` of
a pass share the next apply (one state version), and every reward is still applied."""

from __future__ import annotations

import pathlib
import time

import grpc
import pytest
from banditd.clients.ids import new_event_id
from banditd.service.config import ServerConfig
from banditd.service.server import start
from banditd.v1 import bandit_pb2 as pb
from banditd.v1 import bandit_pb2_grpc as pb_grpc

NS, NAME = "learner", "linger"


@pytest.mark.parametrize("linger_ms", [400.0, 0.0])
def test_rewards_within_the_linger_share_one_apply(
    tmp_path: pathlib.Path, linger_ms: float
) -> None:
    running = start(ServerConfig(port=0, data_dir=str(tmp_path), learner_linger_ms=linger_ms))
    channel = grpc.insecure_channel(f"127.0.0.1:{running.port}")
    stub = pb_grpc.BanditServiceStub(channel)
    try:
        e = pb.Experiment(namespace=NS, name=NAME, family="beta_ts")
        e.reward.kind = pb.REWARD_KIND_BINARY
        for a in ("a", "b"):
            e.arms.add(id=a)
        stub.CreateExperiment(pb.CreateExperimentRequest(experiment=e))
        items = [pb.SelectItem(event_id=new_event_id()) for _ in range(6)]
        decided = stub.Select(pb.SelectRequest(namespace=NS, name=NAME, items=items)).decisions

        def reward(d: pb.Decision) -> int:
            req = pb.UpdateRequest(
                namespace=NS, name=NAME, rewards=[pb.Reward(event_id=d.event_id, value=1.0)]
            )
            return stub.Update(req).acks[0].sequence

        def stats() -> pb.GetStatsResponse:
            return stub.GetStats(pb.GetStatsRequest(namespace=NS, name=NAME))

        def applied(top: int) -> None:
            deadline = time.monotonic() + 10
            while stats().applied_watermark < top:
                assert time.monotonic() < deadline, f"reward {top} never applied"
                time.sleep(0.002)

        # Two rewards, each applied before the next is sent: the first pass compiles, and the
        # second has just begun when its reward shows.
        for d in decided[:2]:
            applied(reward(d))
        v1 = stats().version
        # Four more, each acknowledged (committed) before the next is sent, 20 ms apart.
        for d in decided[2:]:
            top = reward(d)
            time.sleep(0.02)
        applied(top)
        got = stats()
        assert got.feedback.rewards == 6
        if linger_ms:
            # All four arrived within 400 ms of the previous pass: one apply took them all.
            assert got.version == v1 + 1
        else:
            # Without the linger the learner applies them as they come (at least two passes
            # over 80 ms of arrivals), which is what makes the assertion above able to fail.
            assert got.version >= v1 + 2
    finally:
        channel.close()
        running.stop()
