"""Time-decayed families through the service: updates are discounted by their decisions' times,
not by when the learner applies them."""

from __future__ import annotations

import pathlib

import grpc
import numpy as np
import pytest
from banditd.clients.ids import new_event_id
from banditd.policies.drift import decayed
from banditd.service.config import ServerConfig
from banditd.service.server import start
from banditd.v1 import bandit_pb2 as pb
from banditd.v1 import bandit_pb2_grpc as pb_grpc
from fake_clock import FakeClock
from google.protobuf import struct_pb2

NS, NAME = "event-time", "ducb"


def test_rewards_decay_by_their_decision_times(tmp_path: pathlib.Path) -> None:
    clock = FakeClock()
    running = start(ServerConfig(port=0, data_dir=str(tmp_path)), clock=clock)
    channel = grpc.insecure_channel(f"127.0.0.1:{running.port}")
    stub = pb_grpc.BanditServiceStub(channel)
    try:
        e = pb.Experiment(namespace=NS, name=NAME, family="d_ucb")
        e.reward.kind = pb.REWARD_KIND_BINARY
        e.hyperparameters.CopyFrom(struct_pb2.Struct())
        e.hyperparameters.update({"gamma": 0.5, "time_unit": 1.0})
        for a in ("a", "b"):
            e.arms.add(id=a)
        stub.CreateExperiment(pb.CreateExperimentRequest(experiment=e))
        t0 = clock()

        def decide() -> pb.Decision:
            item = pb.SelectItem(event_id=new_event_id())
            req = pb.SelectRequest(namespace=NS, name=NAME, items=[item])
            return stub.Select(req).decisions[0]

        first = decide()  # at t0
        clock.advance(3.0)
        second = decide()  # at t0 + 3
        clock.advance(7.0)  # rewards arrive (and are applied) at t0 + 10
        req = pb.UpdateRequest(
            namespace=NS,
            name=NAME,
            rewards=[
                pb.Reward(event_id=first.event_id, value=1.0),
                pb.Reward(event_id=second.event_id, value=1.0),
            ],
        )
        stub.Update(req)
        rt = running.servicer.registry.get(NS, NAME)
        running.servicer.decisions.flush()
        running.learner.drain(rt)
        st = rt.state
        h = {k: np.asarray(v) for k, v in rt.policy.kernels.h.items()}
        stats = {k: np.asarray(v) for k, v in st.stats.items()}
        slot = {d.arm_ids[0]: rt.slot_of[d.arm_ids[0]] for d in (first, second)}
        # Read at the later decision's time: that row weighs 1, the first 0.5^3.
        got = decayed(h, stats, t0 + 3.0, xp=np)
        expect = np.zeros_like(got["n"])
        expect[slot[first.arm_ids[0]]] += 0.5**3
        expect[slot[second.arm_ids[0]]] += 1.0
        np.testing.assert_allclose(got["n"], expect, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(got["s"], expect, rtol=1e-9, atol=1e-12)
        # Had the learner stamped both rows with one time (its own, or none), they would weigh
        # the same: 2 in all instead of 1.125.
        assert got["n"].sum() == pytest.approx(1.125)
    finally:
        channel.close()
        running.stop()
