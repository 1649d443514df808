"""Bad input, table-driven: the right status, a message naming the request's field, no state
change, and no traceback in the server log. Raw protobufs, so malformed values reach the server."""

from __future__ import annotations

import math
from collections.abc import Callable

import grpc
import pytest
from banditd.v1 import bandit_pb2 as pb
from banditd.v1 import bandit_pb2_grpc as pb_grpc
from google.protobuf import struct_pb2
from server_proc import ServerProcess

Code = grpc.StatusCode
NS = "bad"


def experiment(name: str, family: str = "linucb", arms=("a", "b", "c"), dim: int = 3,
               kind: int = pb.REWARD_KIND_BOUNDED, **kw) -> pb.Experiment:
    e = pb.Experiment(namespace=NS, name=name, family=family, **kw)
    e.feature_schema.dimension = dim
    e.reward.kind = kind
    for a in arms:
        e.arms.add(id=a)
    return e


def hyper(**values) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(values)
    return s


def dense(*v: float) -> pb.Context:
    return pb.Context(dense=pb.DenseVector(values=list(v)))


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory):
    srv = ServerProcess(tmp_path_factory.mktemp("bad"), "--max-items", "50").start()
    channel = grpc.insecure_channel(srv.target)
    stub = pb_grpc.BanditServiceStub(channel)
    stub.target = srv.target  # type: ignore[attr-defined]
    stub.CreateExperiment(pb.CreateExperimentRequest(experiment=experiment("lin")))
    sp = experiment("sparse", dim=10)
    sp.feature_schema.sparse = True
    stub.CreateExperiment(pb.CreateExperimentRequest(experiment=sp))
    stub.CreateExperiment(pb.CreateExperimentRequest(
        experiment=experiment("beta", family="beta_ts", dim=0, kind=pb.REWARD_KIND_BINARY)))
    stub.CreateExperiment(pb.CreateExperimentRequest(
        experiment=experiment("paused", family="ucb1", dim=0,
                              status=pb.EXPERIMENT_STATUS_PAUSED)))
    # one decided event with a reward, so "state unchanged" has something to compare
    d = stub.Select(pb.SelectRequest(namespace=NS, name="lin", items=[
        pb.SelectItem(event_id="seen", context=dense(0.1, 0.2, 0.3))])).decisions[0]
    stub.Update(pb.UpdateRequest(namespace=NS, name="lin",
                                 rewards=[pb.Reward(event_id=d.event_id, value=1.0)]))
    yield stub
    channel.close()
    srv.stop()
    assert "Traceback" not in srv.log(), srv.log()


def snapshot(stub) -> list:
    out = []
    for e in stub.ListExperiments(pb.ListExperimentsRequest()).experiments:
        s = stub.GetStats(pb.GetStatsRequest(namespace=e.namespace, name=e.name))
        out.append((e.namespace, e.name, e.revision, e.status, e.epsilon,
                    [(a.id, a.active) for a in e.arms], s.decisions, s.feedback.rewards,
                    s.feedback.duplicates, s.feedback.observations))
    return out


def sel(name: str, *items: pb.SelectItem) -> Callable:
    return lambda s: s.Select(pb.SelectRequest(namespace=NS, name=name, items=list(items)))


def upd(name: str, rewards=(), observations=()) -> Callable:
    return lambda s: s.Update(pb.UpdateRequest(namespace=NS, name=name, rewards=list(rewards),
                                               observations=list(observations)))


def create(e: pb.Experiment) -> Callable:
    return lambda s: s.CreateExperiment(pb.CreateExperimentRequest(experiment=e))


CASES: dict[str, tuple[Callable, Code, str]] = {
    "unknown experiment": (sel("nope", pb.SelectItem()), Code.NOT_FOUND, "name"),
    "unknown namespace": (
        lambda s: s.GetExperiment(pb.GetExperimentRequest(namespace="zz", name="lin")),
        Code.NOT_FOUND, "namespace"),
    "duplicate experiment": (create(experiment("lin")), Code.ALREADY_EXISTS, "experiment.name"),
    "unknown family": (create(experiment("x1", family="nosuch")), Code.INVALID_ARGUMENT,
                       "experiment.family"),
    "bad hyperparameter": (create(experiment("x2", hyperparameters=hyper(alpha=-1.0))),
                           Code.INVALID_ARGUMENT, "experiment.hyperparameters.alpha"),
    "unknown hyperparameter": (create(experiment("x3", hyperparameters=hyper(alpah=1.0))),
                               Code.INVALID_ARGUMENT, "experiment.hyperparameters.alpah"),
    "family vs reward kind": (
        create(experiment("x4", family="beta_ts", dim=0, kind=pb.REWARD_KIND_REAL)),
        Code.INVALID_ARGUMENT, "experiment.reward.kind"),
    "empty arm id": (create(experiment("x5", arms=("a", ""))), Code.INVALID_ARGUMENT,
                     "experiment.arms[1].id"),
    "duplicate arm ids": (create(experiment("x6", arms=("a", "b", "a"))), Code.INVALID_ARGUMENT,
                          "experiment.arms[2].id"),
    "no arms": (create(experiment("x7", arms=())), Code.INVALID_ARGUMENT, "experiment.arms"),
    "slate above arm count": (create(experiment("x8", slate_size=5)), Code.INVALID_ARGUMENT,
                              "experiment.slate_size"),
    "contextual family without dimension": (create(experiment("x9", dim=0)),
                                            Code.INVALID_ARGUMENT,
                                            "experiment.feature_schema.dimension"),
    "context wrong length": (sel("lin", pb.SelectItem(context=dense(1.0, 2.0))),
                             Code.INVALID_ARGUMENT, "items[0].context.dense.values"),
    "context missing": (sel("lin", pb.SelectItem()), Code.INVALID_ARGUMENT, "items[0].context"),
    "NaN in context": (sel("lin", pb.SelectItem(context=dense(0.0, 1.0, 2.0)),
                           pb.SelectItem(context=dense(math.nan, 1.0, 2.0))),
                       Code.INVALID_ARGUMENT, "items[1].context.dense.values"),
    "inf in context": (sel("lin", pb.SelectItem(context=dense(math.inf, 1.0, 2.0))),
                       Code.INVALID_ARGUMENT, "items[0].context.dense.values"),
    "sparse index out of range": (
        sel("sparse", pb.SelectItem(context=pb.Context(
            sparse=pb.SparseVector(indices=[3, 10], values=[1.0, 2.0])))),
        Code.INVALID_ARGUMENT, "items[0].context.sparse.indices"),
    "dense context to a sparse experiment": (
        sel("sparse", pb.SelectItem(context=dense(*([0.0] * 10)))), Code.INVALID_ARGUMENT,
        "items[0].context.dense"),
    "unknown eligible arm": (
        sel("lin", pb.SelectItem(context=dense(0, 0, 0), eligible_arm_ids=["a", "zz"])),
        Code.INVALID_ARGUMENT, "items[0].eligible_arm_ids[1]"),
    "repeated event id in one request": (
        sel("lin", pb.SelectItem(event_id="e1", context=dense(0, 0, 0)),
            pb.SelectItem(event_id="e1", context=dense(0, 0, 0))),
        Code.INVALID_ARGUMENT, "items[1].event_id"),
    "batch above the limit": (sel("lin", *[pb.SelectItem(context=dense(0, 0, 0))] * 51),
                              Code.INVALID_ARGUMENT, "items"),
    "empty select": (sel("lin"), Code.INVALID_ARGUMENT, "items"),
    "select on a paused experiment": (sel("paused", pb.SelectItem()), Code.FAILED_PRECONDITION,
                                      "name"),
    "reward for a never-issued event id": (upd("lin", [pb.Reward(event_id="never", value=1.0)]),
                                           Code.NOT_FOUND, "rewards[0].event_id"),
    "NaN reward": (upd("lin", [pb.Reward(event_id="seen", value=math.nan)]),
                   Code.INVALID_ARGUMENT, "rewards[0].value"),
    "reward above 1 for bounded": (upd("lin", [pb.Reward(event_id="seen", value=1.5)]),
                                   Code.INVALID_ARGUMENT, "rewards[0].value"),
    "non-binary reward for binary": (upd("beta", [pb.Reward(event_id="x", value=0.5)]),
                                     Code.INVALID_ARGUMENT, "rewards[0].value"),
    "reward without event id": (upd("lin", [pb.Reward(value=1.0)]), Code.INVALID_ARGUMENT,
                                "rewards[0].event_id"),
    "observation of an unknown arm": (
        upd("lin", observations=[pb.Observation(context=dense(0, 0, 0), arm_ids=["zz"],
                                                rewards=[1.0])]),
        Code.INVALID_ARGUMENT, "observations[0].arm_ids[0]"),
    "second reward valid, first never issued": (
        upd("lin", [pb.Reward(event_id="never", value=1.0),
                    pb.Reward(event_id="seen", value=0.0)]),
        Code.NOT_FOUND, "rewards[0].event_id"),
    "retire an unknown arm": (
        lambda s: s.UpdateExperiment(pb.UpdateExperimentRequest(
            namespace=NS, name="lin", retire_arm_ids=["zz"])),
        Code.NOT_FOUND, "retire_arm_ids[0]"),
    "retire every arm": (
        lambda s: s.UpdateExperiment(pb.UpdateExperimentRequest(
            namespace=NS, name="lin", retire_arm_ids=["a", "b", "c"])),
        Code.FAILED_PRECONDITION, "retire_arm_ids"),
    "epsilon above 1": (
        lambda s: s.UpdateExperiment(pb.UpdateExperimentRequest(namespace=NS, name="lin",
                                                                epsilon=1.5)),
        Code.INVALID_ARGUMENT, "epsilon"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_rejected_without_side_effects(env, case: str) -> None:
    call, code, field = CASES[case]
    before = snapshot(env)
    with pytest.raises(grpc.RpcError) as err:
        call(env)
    assert err.value.code() == code, err.value.details()
    assert err.value.details().startswith(f"{field}:"), err.value.details()
    assert snapshot(env) == before


def test_a_repeated_select_returns_the_recorded_decision(env) -> None:
    first = env.Select(pb.SelectRequest(namespace=NS, name="lin", items=[
        pb.SelectItem(event_id="again", context=dense(1.0, 0.0, 0.0))])).decisions[0]
    again = env.Select(pb.SelectRequest(namespace=NS, name="lin", items=[
        pb.SelectItem(event_id="again", context=dense(0.0, 5.0, 0.0))])).decisions[0]
    assert again.replayed and not first.replayed
    assert (again.arm_ids, again.propensity, again.version) == (
        first.arm_ids, first.propensity, first.version)


def test_duplicate_reward_is_acknowledged_not_applied(env) -> None:
    d = env.Select(pb.SelectRequest(namespace=NS, name="beta", items=[
        pb.SelectItem(event_id="dup")])).decisions[0]
    first = env.Update(pb.UpdateRequest(namespace=NS, name="beta", rewards=[
        pb.Reward(event_id=d.event_id, value=1.0)])).acks[0]
    second = env.Update(pb.UpdateRequest(namespace=NS, name="beta", rewards=[
        pb.Reward(event_id=d.event_id, value=0.0)])).acks[0]
    assert first.kind == pb.FEEDBACK_KIND_REWARD and not first.duplicate
    assert second.kind == pb.FEEDBACK_KIND_DUPLICATE and second.duplicate
    stats = env.GetStats(pb.GetStatsRequest(namespace=NS, name="beta"))
    assert stats.feedback.rewards == 1 and stats.feedback.duplicates == 1
    arm = next(a for a in stats.arms if a.arm_id == d.arm_ids[0])
    assert arm.mean_reward == 1.0  # the first reward won


def test_health_and_reflection(env) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    ch = grpc.insecure_channel(env.target)
    try:
        h = health_pb2_grpc.HealthStub(ch).Check(
            health_pb2.HealthCheckRequest(service="banditd.v1.BanditService"))
        assert h.status == health_pb2.HealthCheckResponse.SERVING
        r = reflection_pb2_grpc.ServerReflectionStub(ch).ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
        names = {s.name for resp in r for s in resp.list_services_response.service}
        assert {"banditd.v1.BanditService", "grpc.health.v1.Health"} <= names
    finally:
        ch.close()
