"""The feedback join, case by case, on an in-process server with an injected clock (windows
close by moving the clock, not by sleeping). Each case is checked in the policy state, in
GetStats and in the log."""

from __future__ import annotations

import pathlib
import time

import grpc
import numpy as np
import pytest
from banditd.clients.ids import new_event_id
from banditd.service.config import ServerConfig
from banditd.service.server import start
from banditd.v1 import bandit_pb2 as pb
from banditd.v1 import bandit_pb2_grpc as pb_grpc
from fake_clock import FakeClock
from google.protobuf import duration_pb2

NS = "join"
WINDOW = 10.0


class Server:
    def __init__(self, data_dir: pathlib.Path, clock: FakeClock, **cfg) -> None:
        self.data_dir, self.clock, self.cfg = data_dir, clock, cfg
        self.start()

    def start(self) -> None:
        config = ServerConfig(port=0, data_dir=str(self.data_dir), **self.cfg)
        self.running = start(config, clock=self.clock)
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.running.port}")
        self.stub = pb_grpc.BanditServiceStub(self.channel)

    def stop(self) -> None:
        self.channel.close()
        self.running.stop()

    def rt(self, name: str):
        return self.running.servicer.registry.get(NS, name)

    def settle(self, name: str) -> None:
        """Write due defaults and apply every ready batch now (the learner thread would too)."""
        self.running.servicer.decisions.flush()
        self.running.learner.drain(self.rt(name))

    def create(
        self, name: str, *, default: float | None = None, mode: int = 0, window: float = WINDOW
    ) -> None:
        e = pb.Experiment(namespace=NS, name=name, family="beta_ts")
        e.reward.kind = pb.REWARD_KIND_BINARY
        e.reward.wait_window.CopyFrom(duration_pb2.Duration(seconds=int(window)))
        if default is not None:
            e.reward.default_reward = default
        e.reward.apply_mode = mode
        for a in ("a", "b"):
            e.arms.add(id=a)
        self.stub.CreateExperiment(pb.CreateExperimentRequest(experiment=e))

    def select(self, name: str, n: int = 1, deferred: bool = False) -> list[pb.Decision]:
        items = [pb.SelectItem(event_id=new_event_id(), deferred=deferred) for _ in range(n)]
        return list(
            self.stub.Select(pb.SelectRequest(namespace=NS, name=name, items=items)).decisions
        )

    def reward(self, name: str, event_id: str, value: float) -> pb.FeedbackAck:
        return self.stub.Update(
            pb.UpdateRequest(
                namespace=NS, name=name, rewards=[pb.Reward(event_id=event_id, value=value)]
            )
        ).acks[0]

    def stats(self, name: str) -> pb.GetStatsResponse:
        return self.stub.GetStats(pb.GetStatsRequest(namespace=NS, name=name))

    def posterior(self, name: str) -> tuple[float, float]:
        """Total pseudo-successes and failures learned by the policy state."""
        st = self.rt(name).state.stats
        return float(np.sum(st["s"])), float(np.sum(st["f"]))

    def log_kinds(self, name: str) -> dict[str, int]:
        counts = self.running.servicer.log.counts(self.rt(name).exp.id)
        return {k: v for k, v in counts.feedback.items() if v}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def server(tmp_path: pathlib.Path, clock: FakeClock):
    srv = Server(tmp_path / "data", clock)
    yield srv
    srv.stop()


def test_in_window_reward_is_joined_and_applied_first_wins(server: Server) -> None:
    server.create("first")
    (d,) = server.select("first")
    first = server.reward("first", d.event_id, 1.0)
    second = server.reward("first", d.event_id, 0.0)
    server.settle("first")
    assert first.kind == pb.FEEDBACK_KIND_REWARD
    assert second.kind == pb.FEEDBACK_KIND_DUPLICATE and second.duplicate
    assert server.posterior("first") == (1.0, 0.0)  # the duplicate 0 was not applied
    s = server.stats("first")
    assert (s.feedback.rewards, s.feedback.duplicates) == (1, 1)
    assert server.log_kinds("first") == {"reward": 1, "duplicate": 1}


def test_reward_after_the_window_is_late_and_not_applied(server: Server, clock) -> None:
    server.create("late")
    (d,) = server.select("late")
    clock.advance(WINDOW + 0.001)
    ack = server.reward("late", d.event_id, 1.0)
    server.settle("late")
    assert ack.kind == pb.FEEDBACK_KIND_LATE and ack.late
    assert server.posterior("late") == (0.0, 0.0)
    assert server.stats("late").feedback.late == 1
    assert server.log_kinds("late") == {"late": 1}


def test_reward_just_inside_the_window_counts(server: Server, clock) -> None:
    server.create("edge")
    (d,) = server.select("edge")
    clock.advance(WINDOW)  # judged by commit time: the window's end itself is still inside
    assert server.reward("edge", d.event_id, 1.0).kind == pb.FEEDBACK_KIND_REWARD


def test_never_issued_event_id_is_not_found(server: Server) -> None:
    server.create("nf")
    with pytest.raises(grpc.RpcError) as e:
        server.reward("nf", new_event_id(), 1.0)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    assert server.log_kinds("nf") == {}


def test_reward_for_a_decision_not_yet_written_waits_one_flush(tmp_path, clock) -> None:
    srv = Server(tmp_path / "slow", clock, decision_flush_ms=300.0)
    try:
        srv.create("flush")
        (d,) = srv.select("flush")  # answered before the 300 ms group commit
        ack = srv.reward("flush", d.event_id, 1.0)
        assert ack.kind == pb.FEEDBACK_KIND_REWARD
        srv.settle("flush")
        assert srv.posterior("flush") == (1.0, 0.0)
    finally:
        srv.stop()


def test_default_reward_closes_windows_exactly_once(server: Server, clock) -> None:
    server.create("dflt", default=0.0)
    ds = server.select("dflt", 5)
    server.reward("dflt", ds[0].event_id, 1.0)
    server.reward("dflt", ds[1].event_id, 1.0)
    server.settle("dflt")
    assert server.posterior("dflt") == (0.0, 0.0)  # at_window_close is the default mode here
    clock.advance(WINDOW + 1)
    server.settle("dflt")
    server.settle("dflt")  # a second scan finds nothing more to default
    assert server.posterior("dflt") == (2.0, 3.0)
    s = server.stats("dflt")
    assert (s.feedback.rewards, s.feedback.defaults) == (2, 3)
    assert server.log_kinds("dflt") == {"reward": 2, "default": 3}
    # a reward after its window closed with a default is late, not a second winner
    assert server.reward("dflt", ds[4].event_id, 1.0).kind == pb.FEEDBACK_KIND_LATE


def test_apply_at_window_close_holds_fast_rewards(server: Server, clock) -> None:
    server.create("awc", mode=pb.APPLY_MODE_AT_WINDOW_CLOSE)
    (d,) = server.select("awc")
    server.reward("awc", d.event_id, 1.0)
    server.settle("awc")
    assert server.posterior("awc") == (0.0, 0.0)
    v0 = server.stats("awc").version
    clock.advance(WINDOW + 1)
    server.settle("awc")
    assert server.posterior("awc") == (1.0, 0.0)
    assert server.stats("awc").version == v0 + 1


def test_immediate_mode_applies_at_once(server: Server) -> None:
    server.create("imm", mode=pb.APPLY_MODE_IMMEDIATE, default=0.0)
    (d,) = server.select("imm")
    server.reward("imm", d.event_id, 1.0)
    server.settle("imm")
    assert server.posterior("imm") == (1.0, 0.0)


def test_deferred_decisions_get_no_default_until_activated(server: Server, clock) -> None:
    server.create("def", default=0.0)
    (d,) = server.select("def", deferred=True)
    assert d.deferred
    clock.advance(3 * WINDOW)
    server.settle("def")
    assert server.log_kinds("def") == {}
    act = server.stub.Activate(pb.ActivateRequest(namespace=NS, name="def", event_ids=[d.event_id]))
    assert act.activated == 1
    clock.advance(WINDOW / 2)
    server.settle("def")
    assert server.log_kinds("def") == {}  # the window now runs from the activation
    clock.advance(WINDOW)
    server.settle("def")
    assert server.log_kinds("def") == {"default": 1}
    assert server.posterior("def") == (0.0, 1.0)


def test_windows_closed_during_downtime_get_defaults_at_restart(server: Server, clock) -> None:
    server.create("down", default=1.0)
    server.select("down", 4)
    server.stop()
    clock.advance(WINDOW * 5)
    server.start()
    server.settle("down")
    assert server.log_kinds("down") == {"default": 4}
    assert server.posterior("down") == (4.0, 0.0)


def test_reward_for_a_decision_lost_in_a_crash_is_an_orphan(tmp_path) -> None:
    clock = FakeClock(time.time())  # UUIDv7 ids carry the real time: keep the clock near it
    data = tmp_path / "crashed"
    srv = Server(data, clock)
    srv.create("orph")
    (kept,) = srv.select("orph")
    srv.running.servicer.decisions.flush()
    srv.stop()
    (data / "banditd.running").write_text("running\n")  # as an unclean stop leaves it
    lost = new_event_id()  # issued around now, its decision row never committed
    srv = Server(data, clock)
    try:
        ack = srv.reward("orph", lost, 1.0)
        assert ack.kind == pb.FEEDBACK_KIND_ORPHAN and ack.orphan
        with pytest.raises(grpc.RpcError) as e:
            srv.reward("orph", "not-a-uuid7", 1.0)
        assert e.value.code() == grpc.StatusCode.NOT_FOUND
        assert srv.reward("orph", kept.event_id, 1.0).kind == pb.FEEDBACK_KIND_REWARD
        srv.settle("orph")
        assert srv.posterior("orph") == (1.0, 0.0)  # the orphan was not applied
        assert srv.stats("orph").feedback.orphans == 1
    finally:
        srv.stop()


def test_stream_updates_acks_in_order_with_committed_sequence(server: Server) -> None:
    server.create("stream")
    ds = server.select("stream", 30)

    def messages():
        for i in range(0, 30, 10):
            yield pb.StreamUpdatesRequest(
                update=pb.UpdateRequest(
                    namespace=NS,
                    name="stream",
                    client_sequence=i // 10 + 1,
                    rewards=[pb.Reward(event_id=d.event_id, value=1.0) for d in ds[i : i + 10]],
                )
            )

    acks = list(server.stub.StreamUpdates(messages()))
    assert [a.committed_client_sequence for a in acks] == [1, 2, 3]
    assert [k.event_id for a in acks for k in a.acks] == [d.event_id for d in ds]
    server.settle("stream")
    assert server.stats("stream").feedback.rewards == 30
    assert server.posterior("stream") == (30.0, 0.0)


def test_stream_error_names_the_message_and_field(server: Server) -> None:
    server.create("stream_bad")
    (d,) = server.select("stream_bad")
    msgs = [
        pb.StreamUpdatesRequest(
            update=pb.UpdateRequest(
                namespace=NS,
                name="stream_bad",
                client_sequence=1,
                rewards=[pb.Reward(event_id=d.event_id, value=1.0)],
            )
        ),
        pb.StreamUpdatesRequest(
            update=pb.UpdateRequest(
                namespace=NS,
                name="stream_bad",
                client_sequence=2,
                rewards=[pb.Reward(event_id=d.event_id, value=7.0)],
            )
        ),
    ]
    it = server.stub.StreamUpdates(iter(msgs))
    first = next(it)
    assert first.committed_client_sequence == 1
    with pytest.raises(grpc.RpcError) as e:
        next(it)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "update.rewards[0].value" in e.value.details()


def test_a_retried_update_gets_its_first_ack_back(server: Server) -> None:
    server.create("retry")
    (d,) = server.select("retry")
    req = pb.UpdateRequest(
        namespace=NS,
        name="retry",
        rewards=[pb.Reward(event_id=d.event_id, value=1.0, reward_id="rid-1")],
    )
    first = server.stub.Update(req).acks[0]
    again = server.stub.Update(req).acks[0]  # e.g. the first ack was lost in transit
    assert again.kind == first.kind == pb.FEEDBACK_KIND_REWARD
    assert again.sequence == first.sequence
    other = server.stub.Update(
        pb.UpdateRequest(
            namespace=NS,
            name="retry",
            rewards=[pb.Reward(event_id=d.event_id, value=0.0, reward_id="rid-2")],
        )
    ).acks[0]
    assert other.kind == pb.FEEDBACK_KIND_DUPLICATE
    assert server.log_kinds("retry") == {"reward": 1, "duplicate": 1}
