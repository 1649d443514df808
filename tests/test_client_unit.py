"""Client and CLI tests that need no banditd server.

UUIDv7 ids, conversions to and from ``banditd.v1`` messages, the client's request building,
retries and error mapping (against a scripted stub, and once over a real gRPC channel to an
in-process fake servicer), and the CLI's help, parsing, output and error reporting.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import socket
import sys
import threading
import time
import types
import uuid
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import fields
from typing import Any

import grpc
import numpy as np
import pytest
import typer.main
from banditd.clients import (
    AlreadyExists,
    ArmSpec,
    BanditdError,
    Client,
    Decision,
    ExperimentInfo,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Observation,
    Reward,
    Unavailable,
    convert,
    ids,
    uuid7,
    uuid7_time,
)
from banditd.clients import cli as cli_mod
from banditd.clients.errors import error_for, from_rpc_error
from banditd.v1 import bandit_pb2 as pb
from banditd.v1 import bandit_pb2_grpc as pb_grpc
from grpc_health.v1 import health, health_pb2
from grpc_health.v1 import health_pb2_grpc as health_grpc
from typer.testing import CliRunner

UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")

# ---------------------------------------------------------------------------------------------
# UUIDv7


def test_uuid7_layout_version_and_variant_bits() -> None:
    before = time.time_ns() // 1_000_000
    u = uuid7()
    after = time.time_ns() // 1_000_000
    assert UUID_RE.match(str(u))
    assert u.version == 7
    assert u.variant == uuid.RFC_4122
    assert (u.int >> 76) & 0xF == 0x7
    assert (u.int >> 62) & 0b11 == 0b10
    assert before <= u.int >> 80 <= after
    assert uuid7_time(str(u)) == dt.datetime.fromtimestamp((u.int >> 80) / 1000, tz=dt.UTC)


def test_uuid7_100k_unique_and_strictly_increasing() -> None:
    values = [ids.new_event_id() for _ in range(100_000)]
    assert len(set(values)) == len(values)
    ints = [uuid.UUID(v).int for v in values]
    assert all(a < b for a, b in zip(ints, ints[1:], strict=False))
    # Canonical lowercase hex of fixed width: string order is creation order too.
    assert values == sorted(values)
    assert all(UUID_RE.match(v) for v in values[::1000])


def test_uuid7_monotonic_when_clock_stalls_or_steps_back(monkeypatch: pytest.MonkeyPatch) -> None:
    gen = ids._Generator()
    clock = iter([5_000_000_000_000] * 50 + [4_000_000_000_000] * 50)
    monkeypatch.setattr(ids.time, "time_ns", lambda: next(clock))
    out = [gen.next_int() for _ in range(100)]
    assert all(a < b for a, b in zip(out, out[1:], strict=False))
    # A clock that steps back does not move the embedded time back.
    assert {v >> 80 for v in out} == {5_000_000}


def test_uuid7_counter_overflow_borrows_next_millisecond(monkeypatch: pytest.MonkeyPatch) -> None:
    gen = ids._Generator()
    monkeypatch.setattr(ids.time, "time_ns", lambda: 7_000_000_000)
    first = gen.next_int()
    gen._counter = ids._RAND_MASK  # as if 2**73 ids were made in this millisecond
    second = gen.next_int()
    assert second > first
    assert second >> 80 == (first >> 80) + 1
    assert (second >> 76) & 0xF == 7 and (second >> 62) & 0b11 == 0b10


def test_uuid7_unique_across_threads() -> None:
    out: list[list[str]] = [[] for _ in range(4)]

    def work(i: int) -> None:
        out[i].extend(ids.new_event_id() for _ in range(10_000))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    flat = [v for chunk in out for v in chunk]
    assert len(set(flat)) == 40_000
    for chunk in out:  # each thread sees its own ids in increasing order
        assert chunk == sorted(chunk)


def test_uuid7_time_rejects_other_versions() -> None:
    with pytest.raises(ValueError, match="not a UUIDv7"):
        uuid7_time(uuid.uuid4())


# ---------------------------------------------------------------------------------------------
# Contexts and arm features


def test_dense_batch_round_trip() -> None:
    x = np.arange(12, dtype=np.float64).reshape(4, 3) / 7
    ctxs = convert.to_contexts(x)
    assert len(ctxs) == 4
    for row, c in zip(x, ctxs, strict=True):
        assert c is not None and c.WhichOneof("kind") == "dense"
        back = convert.context_from_pb(c)
        assert isinstance(back, np.ndarray)
        np.testing.assert_array_equal(back, row)  # float64 survives the wire exactly


def test_single_vector_forms_are_one_context() -> None:
    for one in (np.array([0.1, 0.2]), [0.1, 0.2], (0.1, 0.2), [1, 2]):
        ctxs = convert.to_contexts(one)
        assert len(ctxs) == 1
        assert ctxs[0] is not None and len(ctxs[0].dense.values) == 2


def test_sparse_round_trip_sorted_indices_and_json_keys() -> None:
    ctxs = convert.to_contexts([{"7": 1.5, 3: 0.5}, {0: -1.0}])
    assert [c.WhichOneof("kind") for c in ctxs if c is not None] == ["sparse", "sparse"]
    assert ctxs[0] is not None
    assert list(ctxs[0].sparse.indices) == [3, 7]
    assert list(ctxs[0].sparse.values) == [0.5, 1.5]
    assert convert.context_from_pb(ctxs[0]) == {3: 0.5, 7: 1.5}
    assert convert.context_from_pb(ctxs[1]) == {0: -1.0}
    single = convert.to_contexts({"2": 1.0})
    assert len(single) == 1


def test_scipy_sparse_matrix_rows() -> None:
    sp = pytest.importorskip("scipy.sparse")
    m = sp.csr_matrix(np.array([[0, 2.0, 0, 0], [0, 0, 0, 0], [1.0, 0, 0, 3.0]]))
    ctxs = convert.to_contexts(m)
    assert [convert.context_from_pb(c) for c in ctxs] == [{1: 2.0}, {}, {0: 1.0, 3: 3.0}]


def test_mixed_and_non_contextual_batches() -> None:
    ctxs = convert.to_contexts([[1.0, 2.0], {"0": 1.0}, None])
    assert ctxs[0] is not None and ctxs[0].WhichOneof("kind") == "dense"
    assert ctxs[1] is not None and ctxs[1].WhichOneof("kind") == "sparse"
    assert ctxs[2] is None
    assert convert.to_contexts(None) == [None]
    assert convert.to_contexts(3) == [None, None, None]
    assert convert.to_contexts(np.int64(2)) == [None, None]


@pytest.mark.parametrize(
    ("contexts", "message"),
    [
        (np.zeros((2, 2, 2)), r"contexts: expected shape \[B, d\]"),
        ([{"3": 1.0, 3: 2.0}], r"contexts\[0\]: sparse index 3 is repeated"),
        ([[0.0], {"-1": 1.0}], r"contexts\[1\]: sparse index -1 is out of range"),
        ([{"x": 1.0}], r"contexts\[0\]: sparse index 'x' is not an integer"),
        ([[1.0], ["a", "b"]], r"contexts\[1\]: expected a vector of numbers"),
        ([], "contexts: empty batch"),
        (np.zeros((0, 3)), "contexts: empty batch"),
        (0, "at least 1"),
        (True, "bool"),
        ("0.1,0.2", "string"),
    ],
)
def test_context_errors_name_the_field(contexts: Any, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message) as info:
        convert.to_contexts(contexts)
    assert isinstance(info.value, ValueError)
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT


def test_arm_features_forms_round_trip() -> None:
    arms = ["a", "b", "c"]
    x = np.random.default_rng(0).normal(size=(2, 3, 4))
    per_item = convert.to_arm_features(x, 2, arms)
    for b in range(2):
        back = convert.arm_features_from_pb(per_item[b])
        assert list(back) == arms
        for j, a in enumerate(arms):
            np.testing.assert_array_equal(back[a], x[b, j])
    shared = convert.to_arm_features(x[0], 2, arms)  # [N, d] is shared by the batch
    assert [convert.arm_features_from_pb(r)["b"].tolist() for r in shared] == [x[0, 1].tolist()] * 2
    by_arm = convert.to_arm_features({"a": [1.0, 2.0], "b": np.array([[3.0], [4.0]])}, 2)
    assert [convert.arm_features_from_pb(r) for r in by_arm][1]["b"].tolist() == [4.0]
    assert convert.arm_features_from_pb(by_arm[0])["a"].tolist() == [1.0, 2.0]
    listed = convert.to_arm_features([{"a": [1.0]}, None], 2)
    assert [len(r) for r in listed] == [1, 0]
    assert convert.to_arm_features(None, 3) == [[], [], []]


@pytest.mark.parametrize(
    ("features", "arm_ids", "message"),
    [
        (np.zeros((2, 3, 4)), None, "needs the arm ids"),
        (np.zeros((2, 3, 4)), ["a", "b"], "3 arm rows but 2 arm ids"),
        (np.zeros((5, 3, 4)), ["a", "b", "c"], r"expected shape \[2, N, d\]"),
        ({"a": np.zeros((3, 4))}, None, r"arm_features\['a'\]: expected shape"),
        ([{"a": [1.0]}], None, "1 mappings for 2 decisions"),
    ],
)
def test_arm_feature_errors(features: Any, arm_ids: Any, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        convert.to_arm_features(features, 2, arm_ids)


def test_eligible_forms() -> None:
    assert convert.to_eligible(None, 2) == [[], []]
    assert convert.to_eligible(["a", "b"], 2) == [["a", "b"], ["a", "b"]]
    assert convert.to_eligible([["a"], None], 2) == [["a"], []]
    with pytest.raises(InvalidArgument, match="eligible: 1 lists for 2 decisions"):
        convert.to_eligible([["a"]], 2)
    with pytest.raises(InvalidArgument, match="got a string"):
        convert.to_eligible("a", 1)


def test_arms_with_features_and_metadata() -> None:
    arms = convert.to_arms(
        ["a", ArmSpec("b", metadata={"cost": np.float32(0.5)}, features=[9.0])],
        features=np.array([[1.0, 2.0], [3.0, 4.0]]),
        metadata={"a": {"model": "small", "tags": ("x", "y")}},
    )
    assert [a.id for a in arms] == ["a", "b"]
    assert list(arms[0].features) == [1.0, 2.0]
    assert list(arms[1].features) == [9.0]  # the ArmSpec's own features win
    assert convert.from_struct(arms[0].metadata) == {"model": "small", "tags": ["x", "y"]}
    assert convert.from_struct(arms[1].metadata) == {"cost": 0.5}
    with pytest.raises(InvalidArgument, match="'z' is not one of the arms"):
        convert.to_arms(["a"], metadata={"z": {}})


def _full_experiment() -> pb.Experiment:
    e = pb.Experiment(
        namespace="ns",
        name="ads",
        family="linucb",
        revision=2,
        arms=[pb.Arm(id="a", active=True, features=[1.0]), pb.Arm(id="b", active=False)],
        feature_schema=pb.FeatureSchema(
            name="emb", version=3, dimension=8, sparse=True, arm_feature_dimension=1
        ),
        reward=pb.RewardSpec(
            kind=pb.REWARD_KIND_REAL,
            apply_mode=pb.APPLY_MODE_AT_WINDOW_CLOSE,
            default_reward=0.0,
            train_on_holdout=True,
        ),
        epsilon=0.05,
        slate_size=1,
        holdout_fraction=0.1,
        status=pb.EXPERIMENT_STATUS_PAUSED,
        version=17,
    )
    e.hyperparameters.update({"alpha": 0.5})
    e.arms[0].metadata.update({"cost": 0.002})
    e.reward.wait_window.FromSeconds(90)
    e.create_time.FromDatetime(dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC))
    return e


def test_experiment_from_pb() -> None:
    info = convert.experiment_from_pb(_full_experiment())
    assert info.namespace == "ns" and info.name == "ads" and info.family == "linucb"
    assert info.hyperparameters == {"alpha": 0.5}
    assert info.revision == 2 and info.version == 17
    assert info.arm_ids == ("a", "b") and info.active_arm_ids == ("a",)
    assert info.arms[0].metadata == {"cost": 0.002} and info.arms[0].features == (1.0,)
    assert (info.dim, info.sparse, info.arm_feature_dim) == (8, True, 1)
    assert (info.schema_name, info.schema_version) == ("emb", 3)
    assert info.reward_kind == "real" and info.apply_mode == "at_window_close"
    assert info.wait_window == 90.0 and info.default_reward == 0.0 and info.train_on_holdout
    assert info.status == "paused"
    assert info.create_time == dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    assert info.update_time is None
    bare = convert.experiment_from_pb(pb.Experiment(name="x"))
    assert bare.wait_window is None and bare.default_reward is None
    assert bare.reward_kind == "unspecified"


def test_decision_ack_and_stats_from_pb() -> None:
    d = convert.decision_from_pb(
        pb.Decision(
            event_id="e1",
            arm_ids=["b", "a"],
            propensity=0.25,
            slot_propensities=[0.5, 0.5],
            revision=1,
            version=3,
            holdout=True,
            applied_watermark=9,
            replayed=True,
        )
    )
    assert d == Decision(
        event_id="e1",
        arm_ids=("b", "a"),
        propensity=0.25,
        slot_propensities=(0.5, 0.5),
        revision=1,
        version=3,
        holdout=True,
        applied_watermark=9,
        replayed=True,
    )
    assert d.arm_id == "b"
    ack = convert.ack_from_pb(
        pb.FeedbackAck(event_id="e1", sequence=4, kind=pb.FEEDBACK_KIND_DUPLICATE, duplicate=True)
    )
    assert (ack.kind, ack.duplicate, ack.applied) == ("duplicate", True, False)
    s = convert.stats_from_pb(
        pb.GetStatsResponse(
            decisions=10,
            feedback=pb.FeedbackCounts(rewards=7, duplicates=1),
            arms=[pb.ArmStats(arm_id="a", active=True, decisions=10, rewards=7, mean_reward=0.5)],
            revision=1,
            version=2,
        )
    )
    assert s.feedback.rewards == 7 and s.feedback.duplicates == 1
    assert s.arm("a").mean_reward == 0.5
    with pytest.raises(KeyError):
        s.arm("zz")


def test_reward_and_observation_messages() -> None:
    r = convert.to_reward(Reward("e1", 1, slot_values=[0, 1], metrics={"latency": 3}), "r")
    assert (r.event_id, r.value, list(r.slot_values), dict(r.metrics)) == (
        "e1",
        1.0,
        [0.0, 1.0],
        {"latency": 3.0},
    )
    o = convert.to_observation(
        Observation("a", 0.5, context={"2": 1.0}, arm_features={"a": [1.0]}, propensity=0.2), "o"
    )
    assert list(o.arm_ids) == ["a"] and list(o.rewards) == [0.5]
    assert convert.context_from_pb(o.context) == {2: 1.0}
    assert o.HasField("propensity") and o.propensity == pytest.approx(0.2)
    o2 = convert.to_observation(Observation(["a", "b"], [1.0, 0.0], context=[0.1]), "o")
    assert not o2.HasField("propensity") and list(o2.arm_ids) == ["a", "b"]


# ---------------------------------------------------------------------------------------------
# Errors


class FakeRpcError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


def test_error_classes_and_formatting() -> None:
    e = from_rpc_error(FakeRpcError(grpc.StatusCode.NOT_FOUND, "experiment: default/x\nmissing"))
    assert isinstance(e, NotFound) and isinstance(e, BanditdError)
    assert str(e) == "NOT_FOUND: experiment: default/x missing"  # always one line
    assert e.field == "experiment" and e.code_name == "NOT_FOUND"
    assert repr(e).startswith("NotFound(NOT_FOUND")
    inv = from_rpc_error(FakeRpcError(grpc.StatusCode.INVALID_ARGUMENT, "items[3].context: NaN"))
    assert isinstance(inv, InvalidArgument) and isinstance(inv, ValueError)
    assert inv.field == "items[3].context"
    assert isinstance(error_for(grpc.StatusCode.ALREADY_EXISTS, "x"), AlreadyExists)
    assert isinstance(error_for(grpc.StatusCode.FAILED_PRECONDITION, "x"), FailedPrecondition)
    other = error_for(grpc.StatusCode.PERMISSION_DENIED, "no")
    assert type(other) is BanditdError and str(other) == "PERMISSION_DENIED: no"
    assert from_rpc_error(grpc.RpcError("boom")).code == grpc.StatusCode.UNKNOWN
    assert error_for(grpc.StatusCode.INTERNAL, "no field here").field is None


# ---------------------------------------------------------------------------------------------
# Client against a scripted stub

Script = list[Any]  # per call: a response message, or a FakeRpcError to raise


class FakeStub:
    """Stands in for BanditServiceStub: records requests, replays a script per method."""

    def __init__(self, **scripts: Script) -> None:
        self.scripts = scripts
        self.calls: dict[str, list[Any]] = {}

    def __getattr__(self, method: str) -> Callable[..., Any]:
        if method.startswith("_"):
            raise AttributeError(method)

        def call(request: Any, timeout: float | None = None, metadata: Any = None) -> Any:
            req = type(request)()
            req.CopyFrom(request)
            self.calls.setdefault(method, []).append(req)
            script = self.scripts[method]
            outcome = script.pop(0) if len(script) > 1 else script[0]
            if isinstance(outcome, Exception):
                raise outcome
            return outcome(req) if callable(outcome) else outcome

        return call


def _client(stub: FakeStub, retries: int = 3) -> Client:
    c = Client("127.0.0.1:1", retries=retries, backoff=0.0, max_backoff=0.0)
    c._stub = stub
    return c


def _echo_decisions(req: pb.SelectRequest) -> pb.SelectResponse:
    return pb.SelectResponse(
        decisions=[
            pb.Decision(event_id=it.event_id, arm_ids=["a"], propensity=0.5, revision=1)
            for it in req.items
        ]
    )


def _unavailable() -> FakeRpcError:
    return FakeRpcError(grpc.StatusCode.UNAVAILABLE, "connection reset")


def test_select_builds_items_with_uuid7_event_ids() -> None:
    stub = FakeStub(Select=[_echo_decisions])
    with _client(stub) as c:
        x = np.ones((3, 2))
        out = c.select("ns", "exp", x, unit_ids="user-1", eligible=["a", "b"], deferred=True)
    [req] = stub.calls["Select"]
    assert (req.namespace, req.name, len(req.items)) == ("ns", "exp", 3)
    assert [d.event_id for d in out] == [it.event_id for it in req.items]
    for it in req.items:
        assert uuid.UUID(it.event_id).version == 7
        assert it.unit_id == "user-1" and it.deferred
        assert list(it.eligible_arm_ids) == ["a", "b"]
        assert list(it.context.dense.values) == [1.0, 1.0]
    assert all(isinstance(d, Decision) and d.arm_id == "a" for d in out)


def test_select_keeps_given_event_ids_and_refuses_repeats() -> None:
    stub = FakeStub(Select=[_echo_decisions])
    c = _client(stub)
    out = c.select("ns", "exp", 2, event_ids=["e1", None])
    assert out[0].event_id == "e1" and uuid.UUID(out[1].event_id).version == 7
    with pytest.raises(InvalidArgument, match=r"event_ids\[1\]: e1 is repeated"):
        c.select("ns", "exp", 2, event_ids=["e1", "e1"])
    with pytest.raises(InvalidArgument, match="event_ids: 1 ids for 2 decisions"):
        c.select("ns", "exp", 2, event_ids=["e1"])
    assert len(stub.calls["Select"]) == 1  # bad input never reaches the server


def test_select_retry_resends_the_same_event_ids() -> None:
    stub = FakeStub(
        Select=[
            _unavailable(),
            FakeRpcError(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline"),
            _echo_decisions,
        ]
    )
    out = _client(stub).select("ns", "exp", [[0.1], [0.2]])
    reqs = stub.calls["Select"]
    assert len(reqs) == 3
    assert reqs[0] == reqs[1] == reqs[2]  # identical requests: the server replays, not re-decides
    assert [d.event_id for d in out] == [it.event_id for it in reqs[0].items]


def test_retries_give_up_after_the_budget() -> None:
    stub = FakeStub(GetStats=[_unavailable()])
    with pytest.raises(Unavailable, match="UNAVAILABLE: connection reset"):
        _client(stub, retries=2).stats("ns", "exp")
    assert len(stub.calls["GetStats"]) == 3


def test_permanent_errors_are_not_retried() -> None:
    stub = FakeStub(GetExperiment=[FakeRpcError(grpc.StatusCode.NOT_FOUND, "name: no such")])
    with pytest.raises(NotFound) as info:
        _client(stub).get_experiment("ns", "nope")
    assert info.value.field == "name"
    assert len(stub.calls["GetExperiment"]) == 1


def test_update_reward_ids_are_generated_once_and_resent_on_retry() -> None:
    acks = pb.UpdateResponse(
        acks=[
            pb.FeedbackAck(event_id="e1", sequence=1, kind=pb.FEEDBACK_KIND_REWARD),
            pb.FeedbackAck(event_id="e2", sequence=2, kind=pb.FEEDBACK_KIND_DUPLICATE,
                           duplicate=True),
        ]
    )  # fmt: skip
    stub = FakeStub(Update=[_unavailable(), acks])
    out = _client(stub).update(
        "ns", "exp", [("e1", 1.0), Reward("e2", 0.0, metrics={"cost": 0.1}, reward_id="mine")]
    )
    first, second = stub.calls["Update"]
    assert first == second
    assert uuid.UUID(first.rewards[0].reward_id).version == 7
    assert first.rewards[1].reward_id == "mine" and dict(first.rewards[1].metrics) == {"cost": 0.1}
    assert [a.kind for a in out] == ["reward", "duplicate"] and out[1].duplicate


def test_update_mapping_form_and_empty_update() -> None:
    stub = FakeStub(Update=[pb.UpdateResponse()])
    c = _client(stub)
    c.update("ns", "exp", {"e1": 1, "e2": 0})
    assert [(r.event_id, r.value) for r in stub.calls["Update"][0].rewards] == [
        ("e1", 1.0),
        ("e2", 0.0),
    ]
    with pytest.raises(InvalidArgument, match="nothing to report"):
        c.update("ns", "exp", {})


def test_observations_are_not_retried_after_an_ambiguous_failure() -> None:
    stub = FakeStub(Update=[FakeRpcError(grpc.StatusCode.DEADLINE_EXCEEDED, "slow")])
    with pytest.raises(BanditdError) as info:
        _client(stub).update("ns", "exp", observations=[Observation("a", 1.0)])
    assert info.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert len(stub.calls["Update"]) == 1


def test_create_is_not_retried_on_deadline() -> None:
    stub = FakeStub(CreateExperiment=[FakeRpcError(grpc.StatusCode.DEADLINE_EXCEEDED, "slow")])
    with pytest.raises(BanditdError):
        _client(stub).create_experiment("ns", "exp", "beta_ts", ["a", "b"])
    assert len(stub.calls["CreateExperiment"]) == 1


def test_create_request_fields() -> None:
    stub = FakeStub(
        CreateExperiment=[lambda r: pb.CreateExperimentResponse(experiment=r.experiment)]
    )
    info = _client(stub).create_experiment(
        "ns",
        "exp",
        "linucb",
        ["a", "b"],
        hyperparameters={"alpha": 0.5},
        dim=4,
        reward_kind="real",
        wait_window=1.5,
        default_reward=0.0,
        apply_mode="immediate",
        epsilon=0.1,
        slate_size=2,
        holdout_fraction=0.2,
        arm_metadata={"a": {"cost": 1.0}},
    )
    e = stub.calls["CreateExperiment"][0].experiment
    assert e.reward.kind == pb.REWARD_KIND_REAL and e.reward.apply_mode == pb.APPLY_MODE_IMMEDIATE
    assert e.reward.wait_window.ToNanoseconds() == 1_500_000_000
    assert e.reward.HasField("default_reward")
    assert e.feature_schema.dimension == 4 and e.slate_size == 2
    assert isinstance(info, ExperimentInfo) and info.wait_window == 1.5
    assert info.arms[0].metadata == {"cost": 1.0}
    with pytest.raises(InvalidArgument, match="reward_kind: must be one of binary, bounded, real"):
        _client(stub).create_experiment("ns", "exp", "linucb", ["a"], reward_kind="money")  # type: ignore[arg-type]


def test_create_reconciles_already_exists_after_an_ambiguous_retry() -> None:
    existing = pb.GetExperimentResponse(
        experiment=pb.Experiment(namespace="ns", name="exp", family="beta_ts",
                                 arms=[pb.Arm(id="a", active=True), pb.Arm(id="b", active=True)])
    )  # fmt: skip
    dup = FakeRpcError(grpc.StatusCode.ALREADY_EXISTS, "name: ns/exp exists")
    stub = FakeStub(CreateExperiment=[_unavailable(), dup], GetExperiment=[existing])
    info = _client(stub).create_experiment("ns", "exp", "beta_ts", ["a", "b"])
    assert info.arm_ids == ("a", "b")
    # Same error on the first attempt is a real conflict.
    stub = FakeStub(CreateExperiment=[dup], GetExperiment=[existing])
    with pytest.raises(AlreadyExists):
        _client(stub).create_experiment("ns", "exp", "beta_ts", ["a", "b"])
    # After a retry, but the stored experiment differs: still a conflict.
    stub = FakeStub(CreateExperiment=[_unavailable(), dup], GetExperiment=[existing])
    with pytest.raises(AlreadyExists):
        _client(stub).create_experiment("ns", "exp", "linucb", ["a", "b"])


def test_select_arm_feature_array_follows_active_arms() -> None:
    exp = pb.GetExperimentResponse(
        experiment=pb.Experiment(arms=[pb.Arm(id="a", active=True), pb.Arm(id="old"),
                                       pb.Arm(id="b", active=True)])
    )  # fmt: skip
    stub = FakeStub(Select=[_echo_decisions], GetExperiment=[exp])
    feats = np.arange(8, dtype=float).reshape(2, 2, 2)
    _client(stub).select("ns", "exp", np.zeros((2, 3)), arm_features=feats)
    items = stub.calls["Select"][0].items
    assert [[f.arm_id for f in it.arm_features] for it in items] == [["a", "b"], ["a", "b"]]
    assert list(items[1].arm_features[1].values) == [6.0, 7.0]
    # With a shared eligible list the rows follow it and no lookup is needed.
    stub2 = FakeStub(Select=[_echo_decisions])
    _client(stub2).select("ns", "exp", 2, eligible=["b", "a"], arm_features=feats)
    assert [f.arm_id for f in stub2.calls["Select"][0].items[0].arm_features] == ["b", "a"]


def test_select_rejects_a_short_answer() -> None:
    stub = FakeStub(Select=[pb.SelectResponse(decisions=[pb.Decision(event_id="x")])])
    with pytest.raises(BanditdError, match="INTERNAL: decisions: server answered 1 for 2"):
        _client(stub).select("ns", "exp", 2)


def test_update_experiment_request() -> None:
    stub = FakeStub(
        UpdateExperiment=[
            pb.UpdateExperimentResponse(experiment=pb.Experiment(), new_revision=True)
        ]
    )
    res = _client(stub).update_experiment(
        "ns", "exp", add_arms=["c"], retire_arms=["a"], status="paused", epsilon=0.0,
        hyperparameters={"alpha": 2.0},
    )  # fmt: skip
    req = stub.calls["UpdateExperiment"][0]
    assert [a.id for a in req.add_arms] == ["c"] and list(req.retire_arm_ids) == ["a"]
    assert req.status == pb.EXPERIMENT_STATUS_PAUSED
    assert req.HasField("epsilon") and not req.HasField("holdout_fraction")
    assert res.new_revision


# ---------------------------------------------------------------------------------------------
# Client over a real gRPC channel (in-process fake servicer, not banditd's server)


class _FakeServicer(pb_grpc.BanditServiceServicer):
    def __init__(self) -> None:
        self.metadata: list[tuple[str, str]] = []

    def Select(self, request: pb.SelectRequest, context: grpc.ServicerContext) -> Any:
        self.metadata = [(m[0], str(m[1])) for m in context.invocation_metadata()]
        if request.name != "exp":
            context.abort(grpc.StatusCode.NOT_FOUND, f"name: experiment ns/{request.name} missing")
        return _echo_decisions(request)

    def GetStats(self, request: pb.GetStatsRequest, context: grpc.ServicerContext) -> Any:
        context.abort(grpc.StatusCode.FAILED_PRECONDITION, "name: experiment is paused")


@pytest.fixture
def fake_server() -> Iterator[tuple[str, _FakeServicer]]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = _FakeServicer()
    pb_grpc.add_BanditServiceServicer_to_server(servicer, server)
    health_servicer = health.HealthServicer()
    health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    health_grpc.add_HealthServicer_to_server(health_servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}", servicer
    finally:
        server.stop(None)


def test_client_over_grpc(fake_server: tuple[str, _FakeServicer]) -> None:
    target, servicer = fake_server
    with Client(target, timeout=5, metadata=[("x-tenant", "t1")]) as c:
        c.wait_ready(timeout=10)
        [d] = c.select("ns", "exp", [0.5, 0.25])
        assert uuid.UUID(d.event_id).version == 7 and d.arm_ids == ("a",)
        assert ("x-tenant", "t1") in servicer.metadata
        with pytest.raises(NotFound, match="NOT_FOUND: name: experiment ns/other missing"):
            c.select("ns", "other")
        with pytest.raises(FailedPrecondition) as info:
            c.stats("ns", "exp")
        assert info.value.field == "name"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_wait_ready_times_out_without_a_server() -> None:
    with Client(f"127.0.0.1:{_free_port()}") as c, pytest.raises(Unavailable, match="not serving"):
        c.wait_ready(timeout=0.5)


# ---------------------------------------------------------------------------------------------
# CLI

runner = CliRunner()


def _command_paths() -> list[list[str]]:
    root = typer.main.get_command(cli_mod.app)
    paths: list[list[str]] = []

    def walk(cmd: Any, path: list[str]) -> None:
        paths.append(path)
        for name, sub in getattr(cmd, "commands", {}).items():
            walk(sub, [*path, name])

    walk(root, [])
    return paths


def test_cli_has_every_command() -> None:
    paths = {" ".join(p) for p in _command_paths()}
    expected = {
        "serve", "migrate", "families", "select", "update", "stats", "activate",
        "experiment", "experiment create", "experiment list", "experiment show",
        "experiment update",
    }  # fmt: skip
    assert expected <= paths


@pytest.mark.parametrize("path", _command_paths(), ids=lambda p: " ".join(p) or "banditd")
def test_cli_help(path: list[str]) -> None:
    result = runner.invoke(cli_mod.app, [*path, "--help"], env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output


def test_serve_has_a_flag_for_every_config_field(monkeypatch: pytest.MonkeyPatch) -> None:
    from banditd.service.config import ServerConfig

    serve_cmd = typer.main.get_command(cli_mod.app).commands["serve"]  # type: ignore[attr-defined]
    names = {p.name for p in serve_cmd.params}
    assert {f.name for f in fields(ServerConfig)} <= names

    seen: list[ServerConfig] = []
    fake = types.ModuleType("banditd.service.server")
    fake.serve = seen.append  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "banditd.service.server", fake)
    env = {"BANDITD_PORT": "6000", "BANDITD_WORKERS": "3", "BANDITD_DATA_DIR": "/tmp/bd-x"}
    result = runner.invoke(
        cli_mod.app, ["serve", "--port", "7000", "--log-level", "DEBUG"], env=env
    )
    assert result.exit_code == 0, result.output
    [config] = seen
    assert (config.port, config.workers, config.log_level) == (7000, 3, "DEBUG")  # flag > env
    assert config.database_url == "sqlite:////tmp/bd-x/banditd.db"


def test_serve_reports_bad_environment_in_one_line() -> None:
    result = runner.invoke(cli_mod.app, ["serve"], env={"BANDITD_PORT": "eighty"})
    assert result.exit_code == 1
    assert result.stderr.strip() == "error: BANDITD_PORT: expected int, got 'eighty'"


def test_migrate_defaults_to_sqlite_under_data_dir(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    urls: list[str] = []
    fake = types.ModuleType("banditd.store.migrate")
    fake.upgrade = urls.append  # type: ignore[attr-defined]
    fake.current = lambda url: "0001_initial"  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "banditd.store.migrate", fake)
    data = tmp_path / "data"
    result = runner.invoke(cli_mod.app, ["migrate", "--json"], env={"BANDITD_DATA_DIR": str(data)})
    assert result.exit_code == 0, result.output
    assert urls == [f"sqlite:///{data}/banditd.db"]
    assert json.loads(result.stdout)["revision"] == "0001_initial"
    result = runner.invoke(cli_mod.app, ["migrate", "--database-url", "sqlite:///:memory:"])
    assert result.exit_code == 0 and "0001_initial" in result.stdout
    assert urls[-1] == "sqlite:///:memory:"


def test_families_lists_every_family() -> None:
    from banditd.policies import families

    names = list(families())
    result = runner.invoke(cli_mod.app, ["families"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for name in names:
        assert re.search(rf"\b{re.escape(name)}\b", result.stdout), name
    as_json = runner.invoke(cli_mod.app, ["families", "--json"])
    assert as_json.exit_code == 0
    assert sorted(json.loads(as_json.stdout)) == sorted(names)


class _RecordingClient:
    """Stands in for Client in CLI tests: records calls, returns canned values or raises."""

    def __init__(self, outcome: Any) -> None:
        self.outcome = outcome
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    def __enter__(self) -> _RecordingClient:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def __getattr__(self, method: str) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append((method, args, kwargs))
            if isinstance(self.outcome, Exception):
                raise self.outcome
            return self.outcome

        return call


def _use_client(monkeypatch: pytest.MonkeyPatch, outcome: Any) -> _RecordingClient:
    fake = _RecordingClient(outcome)
    monkeypatch.setattr(cli_mod, "_client", lambda target, timeout: fake)
    return fake


def test_cli_server_error_is_one_red_line_with_the_code(monkeypatch: pytest.MonkeyPatch) -> None:
    _use_client(monkeypatch, NotFound(None, "name: experiment default/ads does not exist\n(ns)"))
    result = runner.invoke(cli_mod.app, ["stats", "ads"])
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr == "error: NOT_FOUND: name: experiment default/ads does not exist (ns)\n"
    assert "Traceback" not in result.output


def test_cli_unreachable_server(monkeypatch: pytest.MonkeyPatch) -> None:
    result = runner.invoke(
        cli_mod.app, ["experiment", "list"], env={"BANDITD_TARGET": f"127.0.0.1:{_free_port()}"}
    )
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: UNAVAILABLE: ")


def test_cli_bad_json_context(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _use_client(monkeypatch, [])
    result = runner.invoke(cli_mod.app, ["select", "ads", "--context", "[0.1,"])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: INVALID_ARGUMENT: --context[0]: not valid JSON")
    assert fake.calls == []


def test_cli_select_parses_contexts_and_prints_json(monkeypatch: pytest.MonkeyPatch) -> None:
    decision = Decision(event_id="e1", arm_ids=("a",), propensity=0.5, revision=1)
    fake = _use_client(monkeypatch, [decision, decision, decision])
    result = runner.invoke(
        cli_mod.app,
        ["select", "ads", "-n", "ns", "-c", "[0.1, 0.2]", "-c", '[{"3": 0.5}, [1, 2]]',
         "-e", "a,b", "-e", "c", "--unit-id", "u1", "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    method, args, kwargs = fake.calls[0]
    assert method == "select" and args == ("ns", "ads", [[0.1, 0.2], {"3": 0.5}, [1, 2]])
    assert kwargs["eligible"] == ["a", "b", "c"] and kwargs["unit_ids"] == "u1"
    out = json.loads(result.stdout)
    assert out[0]["event_id"] == "e1" and out[0]["arm_ids"] == ["a"]
    # Non-contextual: a count, and a table for humans.
    result = runner.invoke(cli_mod.app, ["select", "ads", "--count", "3"], env={"COLUMNS": "160"})
    assert result.exit_code == 0 and fake.calls[-1][1][2] == 3
    assert "e1" in result.stdout and "0.5" in result.stdout


def test_cli_update_parses_rewards_metrics_and_observations(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = _use_client(monkeypatch, [])
    result = runner.invoke(
        cli_mod.app,
        ["update", "ads", "-r", "e1=1", "-r", "e2=0.25", "-m", "latency=12.5",
         "--observation", '{"arm": "a", "reward": 1, "context": [0.1]}'],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    _, args, kwargs = fake.calls[0]
    rewards = args[2]
    assert [(r.event_id, r.value, dict(r.metrics)) for r in rewards] == [
        ("e1", 1.0, {"latency": 12.5}),
        ("e2", 0.25, {"latency": 12.5}),
    ]
    assert kwargs["observations"] == [Observation(arm_ids="a", rewards=1, context=[0.1])]
    bad = runner.invoke(cli_mod.app, ["update", "ads", "-r", "e1=high"])
    assert bad.exit_code == 1 and "--reward[0]: 'high' is not a number" in bad.stderr


def test_cli_experiment_create_passes_options(monkeypatch: pytest.MonkeyPatch) -> None:
    info = convert.experiment_from_pb(_full_experiment())
    fake = _use_client(monkeypatch, info)
    result = runner.invoke(
        cli_mod.app,
        ["experiment", "create", "ads", "-f", "linucb", "-a", "a,b", "-a", "c", "-H", "alpha=0.5",
         "--dim", "8", "--reward-kind", "real", "--wait-window", "90",
         "--arm-metadata", '{"a": {"cost": 0.002}}'],
        env={"COLUMNS": "160"},
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    method, args, kwargs = fake.calls[0]
    assert method == "create_experiment" and args == ("default", "ads", "linucb", ["a", "b", "c"])
    assert kwargs["hyperparameters"] == {"alpha": 0.5} and kwargs["dim"] == 8
    assert kwargs["reward_kind"] == "real" and kwargs["wait_window"] == 90.0
    assert kwargs["arm_metadata"] == {"a": {"cost": 0.002}}
    assert "ns/ads" in result.stdout and "linucb" in result.stdout


def test_cli_json_output_of_stats(monkeypatch: pytest.MonkeyPatch) -> None:
    stats = convert.stats_from_pb(
        pb.GetStatsResponse(
            decisions=3,
            arms=[pb.ArmStats(arm_id="a", decisions=3), pb.ArmStats(arm_id="[bold]x")],
        )
    )
    _use_client(monkeypatch, stats)
    result = runner.invoke(cli_mod.app, ["stats", "ads", "--json"])
    assert result.exit_code == 0
    out = json.loads(result.stdout)
    assert out["decisions"] == 3 and out["arms"][0]["arm_id"] == "a"
    table = runner.invoke(cli_mod.app, ["stats", "ads"], env={"COLUMNS": "200"})
    assert table.exit_code == 0 and "default/ads" in table.stdout
    assert "[bold]x" in table.stdout  # user text is printed as-is, never as rich markup
