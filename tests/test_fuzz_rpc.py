"""Property-based fuzzing of every RPC, with random messages and mutated valid ones.

One in-process server (SQLite event log, fake clock) serves experiments of several families.
Each example sends one request (a whole random message of the RPC's request type, or a valid
request with 0-3 random mutations; see tests/fuzz_messages.py) and checks:

* the status is OK or a documented client error: never INTERNAL, UNKNOWN, UNAVAILABLE or a
  deadline (a hang); a valid request with no mutation is answered OK;
* an error message starts with a field path that resolves against the request (fields of the
  message types, indexes within the repeated fields, map and Struct keys it holds);
* a rejected request changes nothing: every experiment's runtime (state arrays, version,
  watermark, revision, status, config, arms), the replay cache and the event log (row counts of
  every table, the experiment and arm rows) are the same before and after;
* the server still answers a valid Select afterwards;
* no warning, error or traceback reaches the server's loggers or stderr;
* an experiment a CreateExperiment/UpdateExperiment accepted serves: a valid Select gets finite
  propensities in (0, 1], a reward for it is acknowledged and applied.

Valid requests come from per-family generators; mutations are generic (any field of the
message) plus targeted ones where a generic one seldom lands (a family's hyperparameters,
Duration and schema edges, client_sequence past a signed 64-bit integer). The cases the fuzzer
failed on are pinned as plain tests (test_found_*). Examples are derandomized (the same ones
every run) and the whole file runs in about a minute.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import pathlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
import jax
import numpy as np
import pytest
from banditd import policies
from banditd.service.config import ServerConfig
from banditd.service.runtime import Runtime
from banditd.service.server import Running, start
from banditd.store import schema
from banditd.v1 import bandit_pb2 as pb
from banditd.v1 import bandit_pb2_grpc as pb_grpc
from fake_clock import FakeClock
from fuzz_messages import Fuzzer, field_path_problem, stream_path_problem
from google.protobuf import duration_pb2, struct_pb2
from google.protobuf.message import Message
from hypothesis import HealthCheck, Phase, event, given, note, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context

ROOT = pathlib.Path(__file__).resolve().parent.parent
NS = "fz"
CREATE_NS = "fz-c"
Code = grpc.StatusCode
# Client errors the service documents (bandit.proto); UNAVAILABLE is for a database outage,
# which an embedded SQLite log under test never has.
ALLOWED = {
    Code.OK,
    Code.INVALID_ARGUMENT,
    Code.NOT_FOUND,
    Code.ALREADY_EXISTS,
    Code.FAILED_PRECONDITION,
    Code.OUT_OF_RANGE,
    Code.RESOURCE_EXHAUSTED,
    Code.UNIMPLEMENTED,
}
MAX_ITEMS = 6
# Experiments Select/Update/Activate/GetStats are fuzzed against (fixture-created, never
# paused or changed by UpdateExperiment fuzzing), and the ones UpdateExperiment changes.
SERVING = ("beta", "lin", "shared", "cascade", "diag", "exp3")
ADMIN = ("u-beta", "u-lin", "u-casc")
# Families with bounded state whatever their hyperparameters (see fuzz_messages' docstring on
# sizes); pak_ucb's window, rff_ucb's n_features and slate_pbm_ts' positions size the state.
FAMILIES = (
    "beta_ts",
    "ucb1",
    "linucb",
    "cascade_ts",
    "diag_linucb",
    "exp3",
    "gaussian_ts",
    "epsilon_greedy",
)


def hyper_keys(*families: str) -> list[str]:
    return sorted(
        {k for f in families for k in policies.get(f).hypers if k != "auto_alpha"} | {"nosuch"}
    )


HYPER_KEYS = hyper_keys(*FAMILIES)
ADMIN_HYPER_KEYS = hyper_keys("beta_ts", "linucb", "cascade_ts")
SETTINGS = settings(
    derandomize=True,
    # No explain phase: it reruns a failing example hundreds of times against a server whose
    # state the earlier runs changed.
    phases=[Phase.explicit, Phase.generate, Phase.shrink],
    database=None,
    deadline=None,
    print_blob=False,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.function_scoped_fixture,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
    ],
)


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@dataclass
class Harness:
    running: Running
    stub: pb_grpc.BanditServiceStub
    records: Records
    decided: dict[str, list[str]] = field(default_factory=dict)  # event ids per experiment
    deferred: dict[str, list[str]] = field(default_factory=dict)
    counter: int = 0  # fresh experiment names and arm ids
    hashes: dict[int, tuple[Any, str]] = field(default_factory=dict)

    def fresh(self, prefix: str) -> str:
        """A name never used before (not drawn: Hypothesis needs no say in it)."""
        self.counter += 1
        return f"{prefix}{self.counter}"

    @property
    def servicer(self) -> Any:
        return self.running.servicer

    def __repr__(self) -> str:
        return "Harness()"

    def rt(self, name: str, namespace: str = NS) -> Runtime:
        rt = self.servicer.registry.get(namespace, name)
        assert rt is not None, name
        return rt

    # --- state --------------------------------------------------------------------------------

    def settle(self, targets: list[tuple[str, str]] | None = None) -> None:
        """Commit what the writers hold and apply the pending feedback of ``targets`` (every
        experiment if None) now. Only Update and StreamUpdates write feedback, and the clock
        never closes a window, so after each example only its own targets can have any."""
        self.servicer.decisions.flush(timeout=30)
        self.servicer.feedback.flush(timeout=30)
        reg = self.servicer.registry
        rts = reg.all() if targets is None else [reg.get(ns, n) for ns, n in targets]
        for rt in rts:
            if rt is not None:
                self.running.learner.drain(rt)

    def state_hash(self, state: Any) -> str:
        """A digest of every array of a policy state. States are immutable (a change publishes
        a new object), so the digest is cached by object, which the cache keeps alive."""
        hit = self.hashes.get(id(state))
        if hit is not None and hit[0] is state:
            return hit[1]
        h = hashlib.blake2b(digest_size=16)
        for x in jax.tree_util.tree_leaves(state):
            a = np.asarray(x)
            h.update(f"{a.dtype.str}{a.shape}".encode())
            h.update(a.tobytes())
        if len(self.hashes) > 10_000:
            self.hashes.clear()
        self.hashes[id(state)] = (state, h.hexdigest())
        return h.hexdigest()

    def snapshot(self) -> dict[str, Any]:
        runtimes = {}
        for rt in self.servicer.registry.all():
            with rt.lock:
                runtimes[rt.key] = (
                    rt.revision,
                    rt.exp.status,
                    json.dumps(rt.config, sort_keys=True, default=str),
                    tuple((a.arm_id, a.slot, a.active) for a in rt.arms),
                    rt.watermark,
                    int(rt.state.meta.version),
                    self.state_hash(rt.state),
                )
        tables = [t.name for t in schema.metadata.sorted_tables]
        count_all = "SELECT " + ", ".join(f"(SELECT count(*) FROM {t})" for t in tables)
        with self.servicer.log.engine.connect() as c:
            counts = dict(zip(tables, c.exec_driver_sql(count_all).one(), strict=True))
            experiments = c.exec_driver_sql(
                "SELECT id, status, revision, config, updated_at FROM experiments ORDER BY id"
            ).all()
            arms = c.exec_driver_sql(
                "SELECT experiment_id, slot, arm_id, active FROM arms ORDER BY experiment_id, slot"
            ).all()
        with self.servicer._inflight_lock:
            recent = len(self.servicer._recent)
        return {
            "runtime": runtimes,
            "counts": counts,
            "experiments": [tuple(r) for r in experiments],
            "arms": [tuple(r) for r in arms],
            "recent": recent,
        }

    # --- calls --------------------------------------------------------------------------------

    def call(self, rpc: str, request: Message) -> tuple[grpc.StatusCode, str, Any]:
        try:
            return Code.OK, "", getattr(self.stub, rpc)(request, timeout=60)
        except grpc.RpcError as e:
            return e.code(), e.details() or "", None

    def stream(self, requests: list[pb.StreamUpdatesRequest]) -> tuple[Any, str, list[Any]]:
        got: list[Any] = []
        try:
            for r in self.stub.StreamUpdates(iter(requests), timeout=60):
                got.append(r)
        except grpc.RpcError as e:
            return e.code(), e.details() or "", got
        return Code.OK, "", got

    def probe(self) -> None:
        """The server still decides: a valid Select on an experiment no fuzzer touches."""
        resp = self.stub.Select(
            pb.SelectRequest(namespace="probe", name="probe", items=[pb.SelectItem()]),
            timeout=60,
        )
        assert len(resp.decisions) == 1 and len(resp.decisions[0].arm_ids) == 1

    def quiet(self) -> None:
        """Nothing reached the server's loggers since the last call (cleared, so one failing
        example does not fail every later one)."""
        got, self.records.records = self.records.records, []
        bad = [
            f"{r.name} {r.levelname}: {r.getMessage()}"
            + (" (with a traceback)" if r.exc_info else "")
            for r in got
        ]
        assert not bad, "server logged:\n" + "\n".join(bad)


def diff(before: dict[str, Any], after: dict[str, Any]) -> str:
    out = []
    for k in before:
        if before[k] == after[k]:
            continue
        if isinstance(before[k], dict):
            for kk in sorted(set(before[k]) | set(after[k]), key=str):
                if before[k].get(kk) != after[k].get(kk):
                    out.append(f"{k}[{kk}]: {before[k].get(kk)!r} -> {after[k].get(kk)!r}")
        else:
            out.append(f"{k} changed")
    return "; ".join(out)


def record(text: str, kind: str) -> None:
    """A Hypothesis note (shown with a failing example) and event (--hypothesis-show-statistics),
    when inside a Hypothesis test; the pinned cases below call ``check`` outside one."""
    if currently_in_test_context():
        note(text)
        event(kind[:80])


def target(request: Message) -> list[tuple[str, str]]:
    names = set(request.DESCRIPTOR.fields_by_name)
    return [(request.namespace, request.name)] if {"namespace", "name"} <= names else []  # type: ignore[attr-defined]


def check(h: Harness, rpc: str, request: Message, *, must_pass: bool = False) -> tuple[Code, str]:
    """Send one request and check every property; returns its status code and message."""
    targets = target(request)
    h.records.records.clear()  # what an earlier, failed example left
    h.settle(targets)
    before = h.snapshot()
    code, details, _ = h.call(rpc, request)
    record(f"{rpc} -> {code.name}: {details}", f"{rpc} {code.name} {details.split(':')[0]}")
    assert code in ALLOWED, f"{rpc} answered {code.name}: {details}"
    if must_pass:
        assert code == Code.OK, f"valid {rpc} rejected: {code.name}: {details}"
    h.settle(targets)
    if code != Code.OK:
        problem = field_path_problem(request, details)
        assert problem is None, f"{code.name} {details!r}: {problem}"
        after = h.snapshot()
        assert after == before, f"rejected {rpc} changed state: {diff(before, after)}"
    h.probe()
    h.quiet()
    return code, details


def check_stream(h: Harness, requests: list[pb.StreamUpdatesRequest]) -> tuple[Code, str]:
    targets = [t for r in requests for t in target(r.update)]
    h.records.records.clear()
    h.settle(targets)
    before = h.snapshot()
    code, details, got = h.stream(requests)
    record(
        f"StreamUpdates -> {code.name}: {details} after {len(got)} responses",
        f"StreamUpdates {code.name} {':'.join(details.split(':')[:2])}",
    )
    assert code in ALLOWED, f"StreamUpdates answered {code.name}: {details}"
    h.settle(targets)
    if code != Code.OK:
        problem = stream_path_problem(requests, details)
        assert problem is None, f"{code.name} {details!r}: {problem}"
        after = h.snapshot()
        acked = sum(len(r.acks) for r in got)
        grown = after["counts"]["feedback"] - before["counts"]["feedback"]
        # Messages before the rejected one are committed and acknowledged; nothing else.
        assert 0 <= grown <= acked, f"{grown} feedback rows for {acked} acks"
        if not got:
            assert after == before, f"rejected stream changed state: {diff(before, after)}"
        for k in ("experiments", "arms"):
            assert after[k] == before[k], f"rejected stream changed {k}"
        for k in ("decisions", "revisions", "arms", "experiments"):
            assert after["counts"][k] == before["counts"][k], f"rejected stream changed {k}"
    else:
        assert len(got) == len(requests)
    h.probe()
    h.quiet()
    return code, details


# --- the server -------------------------------------------------------------------------------


def experiment(
    name: str,
    family: str,
    arms: tuple[str, ...] = ("a", "b", "c"),
    *,
    namespace: str = NS,
    kind: int = pb.REWARD_KIND_BINARY,
    dim: int = 0,
    **kw: Any,
) -> pb.Experiment:
    e = pb.Experiment(namespace=namespace, name=name, family=family, **kw)
    e.feature_schema.dimension = dim
    e.reward.kind = kind
    e.reward.wait_window.CopyFrom(duration_pb2.Duration(seconds=3600))
    for a in arms:
        e.arms.add(id=a)
    return e


def hyper(**values: Any) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(values)
    return s


@pytest.fixture(scope="module")
def h(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    os.environ.setdefault("BANDITD_JAX_CACHE", str(ROOT / ".jax_cache"))
    config = ServerConfig(
        port=0,
        data_dir=str(tmp_path_factory.mktemp("fuzz")),
        max_items=MAX_ITEMS,
        workers=4,
        writer_flush_ms=0.2,
        decision_flush_ms=0.2,
        precompile=False,
    )
    running = start(config, clock=FakeClock())
    channel = grpc.insecure_channel(f"127.0.0.1:{running.port}")
    stub = pb_grpc.BanditServiceStub(channel)
    records = Records()
    loggers = [logging.getLogger("banditd"), logging.getLogger("grpc")]
    for lg in loggers:
        lg.addHandler(records)
    shared = experiment(
        "shared", "linucb", kind=pb.REWARD_KIND_BOUNDED, dim=2, hyperparameters=hyper(shared=True)
    )
    shared.feature_schema.arm_feature_dimension = 3
    shared.arms[0].features.extend([1.0, 0.0, 0.0])
    shared.arms[1].features.extend([0.0, 1.0, 0.0])  # arm c has none: per-request features
    diag = experiment("diag", "diag_linucb", kind=pb.REWARD_KIND_REAL, dim=16)
    diag.feature_schema.sparse = True
    five = ("a", "b", "c", "d", "e")
    for e in (
        experiment("beta", "beta_ts"),
        experiment("lin", "linucb", kind=pb.REWARD_KIND_BOUNDED, dim=4),
        shared,
        experiment("cascade", "cascade_ts", five, slate_size=3),
        diag,
        experiment("exp3", "exp3", ("a", "b"), kind=pb.REWARD_KIND_BOUNDED),
        experiment("u-beta", "beta_ts"),
        experiment("u-lin", "linucb", kind=pb.REWARD_KIND_BOUNDED, dim=4),
        experiment("u-casc", "cascade_ts", ("a", "b", "c", "d"), slate_size=2),
        experiment("probe", "beta_ts", namespace="probe"),
    ):
        stub.CreateExperiment(pb.CreateExperimentRequest(experiment=e))
    h = Harness(running, stub, records)
    for name in SERVING:
        items = []
        for i in range(6):
            item = pb.SelectItem(event_id=f"{name}-ev{i}", deferred=i >= 4)
            ctx = valid_context(h.rt(name), np.random.default_rng(i))
            if ctx is not None:
                item.context.CopyFrom(ctx)
            if name == "shared":
                item.arm_features.add(arm_id="c", values=[0.0, 0.0, 1.0])
            items.append(item)
        stub.Select(pb.SelectRequest(namespace=NS, name=name, items=items))
        h.decided[name] = [i.event_id for i in items]
        h.deferred[name] = [i.event_id for i in items if i.deferred]
    h.settle()
    records.records.clear()  # start-up is not under test
    yield h
    channel.close()
    running.stop()
    for lg in loggers:
        lg.removeHandler(records)
    h.quiet()


def valid_context(rt: Runtime, rng: np.random.Generator) -> pb.Context | None:
    dim = rt.config["dim"]
    if not dim:
        return None
    if rt.config["sparse"]:
        n = min(3, dim)
        idx = sorted(rng.choice(dim, size=n, replace=False).tolist())
        return pb.Context(sparse=pb.SparseVector(indices=idx, values=rng.normal(size=n).tolist()))
    return pb.Context(dense=pb.DenseVector(values=rng.normal(size=dim).tolist()))


def exercise(h: Harness, namespace: str, name: str) -> None:
    """An experiment a Create/UpdateExperiment accepted serves: a valid Select is answered
    with finite propensities in (0, 1], a reward for it is acknowledged, and the learner
    applies it without a complaint in the log."""
    rt = h.rt(name, namespace)
    item = pb.SelectItem(event_id=h.fresh("x-"))
    ctx = valid_context(rt, np.random.default_rng(h.counter))
    if ctx is not None:
        item.context.CopyFrom(ctx)
    afd = rt.config["arm_feature_dim"]
    for a in rt.arms:
        if afd and a.active and not rt.has_static[a.slot]:
            item.arm_features.add(arm_id=a.arm_id, values=[0.5] * afd)
    code, details, resp = h.call(
        "Select", pb.SelectRequest(namespace=namespace, name=name, items=[item])
    )
    if rt.exp.status == "paused":
        assert code == Code.FAILED_PRECONDITION, (code, details)
        return
    if code == Code.FAILED_PRECONDITION and "non-finite choice probabilities" in details:
        # Hyperparameters the family's checks accept but its numerics do not (e.g. cascade_ts
        # with prior_b=1e308 overflows in policies/rank_probs.py): refused cleanly, which
        # ``check`` verified for the same Select in test_found_nonfinite_propensities.
        record(details, f"{rt.config['family']}: non-finite probabilities")
        return
    assert code == Code.OK, f"accepted {rt.key} cannot Select: {code.name}: {details}"
    (d,) = resp.decisions
    props = [d.propensity, *d.slot_propensities]
    # (1 + 1e-9: exact quadrature may exceed 1 by a few ulps)
    assert all(math.isfinite(p) and 0.0 < p <= 1.0 + 1e-9 for p in props), f"{rt.key}: {props}"
    reward = pb.Reward(event_id=d.event_id, value=1.0)
    if policies.get(rt.config["family"]).ranked:
        reward.slot_values.extend([1.0] + [0.0] * (len(d.arm_ids) - 1))
    code, details, _ = h.call(
        "Update", pb.UpdateRequest(namespace=namespace, name=name, rewards=[reward])
    )
    assert code == Code.OK, f"accepted {rt.key} cannot Update: {code.name}: {details}"
    h.settle([(namespace, name)])
    h.quiet()


# --- valid requests ---------------------------------------------------------------------------

FINITE = st.floats(-5.0, 5.0)


def pool(h: Harness, *names: str) -> list[str]:
    """Strings the mutators and random messages draw from: known names and ids."""
    ids = [e for n in SERVING for e in h.decided[n][:2]]
    return [NS, CREATE_NS, *names, "a", "b", "c", "d", "e", "nope", *ids, *FAMILIES, "fz-1"]


def draw_context(data: st.DataObject, rt: Runtime) -> pb.Context | None:
    dim = rt.config["dim"]
    if not dim:
        return None
    if rt.config["sparse"]:
        idx = data.draw(st.lists(st.integers(0, dim - 1), unique=True, max_size=4))
        vals = data.draw(st.lists(FINITE, min_size=len(idx), max_size=len(idx)))
        return pb.Context(sparse=pb.SparseVector(indices=idx, values=vals))
    vals = data.draw(st.lists(FINITE, min_size=dim, max_size=dim))
    return pb.Context(dense=pb.DenseVector(values=vals))


def draw_arm_features(
    data: st.DataObject, rt: Runtime, arms: list[str], out: Any, *, all_needed: bool = True
) -> None:
    """Per-request features for the arms among ``arms`` that have no static ones (and, at
    random, for some that have)."""
    afd = rt.config["arm_feature_dim"]
    if not afd:
        return
    for arm_id in arms:
        slot = rt.slot_of[arm_id]
        if (all_needed and not rt.has_static[slot]) or data.draw(st.booleans()):
            vals = data.draw(st.lists(FINITE, min_size=afd, max_size=afd))
            out.add(arm_id=arm_id, values=vals)


def valid_select(data: st.DataObject, h: Harness, name: str) -> pb.SelectRequest:
    rt = h.rt(name)
    active = [a.arm_id for a in rt.arms if a.active]
    k = max(1, int(rt.config["slate_size"]))
    n = data.draw(st.integers(1, 3))
    ids = data.draw(
        st.lists(
            st.one_of(
                st.just(""),
                st.sampled_from(h.decided[name]),
                st.integers(0, 2**40).map(lambda i: f"fz-{i}"),
            ),
            min_size=n,
            max_size=n,
            unique_by=lambda x: x or object(),
        )
    )
    req = pb.SelectRequest(namespace=NS, name=name)
    for eid in ids:
        item = req.items.add(event_id=eid, deferred=data.draw(st.booleans()))
        item.unit_id = data.draw(st.sampled_from(["", "u1", "u2", "user-3"]))
        ctx = draw_context(data, rt)
        if ctx is not None:
            item.context.CopyFrom(ctx)
        eligible = active
        if data.draw(st.booleans()):
            eligible = data.draw(
                st.lists(st.sampled_from(active), unique=True, min_size=k, max_size=len(active))
            )
            item.eligible_arm_ids.extend(eligible)
        draw_arm_features(data, rt, eligible, item.arm_features)
    return req


def draw_reward(data: st.DataObject, kind: str) -> float:
    if kind == "binary":
        return data.draw(st.sampled_from([0.0, 1.0]))
    if kind == "bounded":
        return data.draw(st.floats(0.0, 1.0))
    return data.draw(FINITE)


def valid_update(data: st.DataObject, h: Harness, name: str) -> pb.UpdateRequest:
    rt = h.rt(name)
    cfg = rt.config
    fam = policies.get(cfg["family"])
    kind = cfg["reward"]["kind"]
    k = max(1, int(cfg["slate_size"]))
    req = pb.UpdateRequest(namespace=NS, name=name, client_sequence=data.draw(st.integers(0, 1000)))
    n_rewards = data.draw(st.integers(0, 3))
    n_obs = data.draw(st.integers(0 if n_rewards else 1, 2))
    for _ in range(n_rewards):
        r = req.rewards.add(event_id=data.draw(st.sampled_from(h.decided[name])))
        if fam.ranked:
            r.value = data.draw(FINITE)
            r.slot_values.extend(draw_reward(data, kind) for _ in range(k))
        else:
            r.value = draw_reward(data, kind)
        for key in data.draw(
            st.lists(st.sampled_from(["latency", "cost", "judge"]), unique=True, max_size=2)
        ):
            r.metrics[key] = data.draw(st.floats(-1e3, 1e3))
        r.reward_id = data.draw(st.one_of(st.just(""), st.integers(0, 10**6).map(str)))
    arms = [a.arm_id for a in rt.arms]
    for _ in range(n_obs):
        o = req.observations.add()
        m = data.draw(st.integers(1, k)) if fam.ranked else 1
        chosen = data.draw(st.lists(st.sampled_from(arms), unique=True, min_size=m, max_size=m))
        o.arm_ids.extend(chosen)
        o.rewards.extend(draw_reward(data, kind) for _ in chosen)
        ctx = draw_context(data, rt)
        if ctx is not None:
            o.context.CopyFrom(ctx)
        draw_arm_features(data, rt, chosen, o.arm_features)
        if fam.needs_propensity or data.draw(st.booleans()):
            o.propensity = data.draw(st.floats(0.01, 1.0))
    return req


def valid_create(data: st.DataObject, h: Harness, family: str) -> pb.CreateExperimentRequest:
    fam = policies.get(family)
    kind = data.draw(st.sampled_from(fam.reward_kinds))
    k = 2 if fam.ranked else data.draw(st.sampled_from([0, 1]))
    arms = data.draw(
        st.lists(st.sampled_from("abcdef"), unique=True, min_size=max(k, 1), max_size=4)
    )
    e = pb.Experiment(
        namespace=data.draw(st.sampled_from([CREATE_NS, NS])),
        name=h.fresh("c"),
        family=family,
        slate_size=k,
        epsilon=data.draw(st.floats(0.0, 1.0)),
        holdout_fraction=data.draw(st.floats(0.0, 0.9)),
        status=data.draw(st.sampled_from([0, 1, 2])),
    )
    for a in arms:
        e.arms.add(id=a)
    if fam.contextual:
        e.feature_schema.dimension = data.draw(st.integers(1, 4))
        e.feature_schema.sparse = family == "diag_linucb" and data.draw(st.booleans())
    e.feature_schema.name = data.draw(st.sampled_from(["", "fs"]))
    e.feature_schema.version = data.draw(st.integers(0, 3))
    e.reward.kind = {"binary": 1, "bounded": 2, "real": 3}[kind]
    window = data.draw(st.sampled_from([0, 60]))
    e.reward.wait_window.seconds = window
    if window:
        if data.draw(st.booleans()):
            e.reward.default_reward = 0.0
        e.reward.apply_mode = data.draw(st.sampled_from([0, 1, 2]))
    else:
        e.reward.apply_mode = data.draw(st.sampled_from([0, 1]))
    hp = {
        k2: data.draw(st.floats(0.1, 1.0))
        for k2, v in fam.hypers.items()
        if isinstance(v.default, float) and data.draw(st.booleans())
    }
    if hp:
        e.hyperparameters.update(hp)
    return pb.CreateExperimentRequest(experiment=e)


def valid_update_experiment(
    data: st.DataObject, h: Harness, name: str
) -> pb.UpdateExperimentRequest:
    """The request's shape is drawn the same way whatever the experiment's arms are now
    (earlier examples add and retire them), as Hypothesis requires: a retired arm is drawn as
    an index, and comes with a fresh arm so the experiment never runs out of them."""
    rt = h.rt(name)
    active = [a.arm_id for a in rt.arms if a.active]
    req = pb.UpdateExperimentRequest(namespace=NS, name=name)
    req.status = data.draw(st.sampled_from([0, 0, 1, 2]))
    if data.draw(st.booleans()):
        req.epsilon = data.draw(st.floats(0.0, 1.0))
    if data.draw(st.booleans()):
        req.holdout_fraction = data.draw(st.floats(0.0, 0.9))
    if data.draw(st.booleans()):
        req.retire_arm_ids.append(active[data.draw(st.integers(0, 1023)) % len(active)])
        add = True
    else:
        add = data.draw(st.booleans())
    if add:
        req.add_arms.add(id=h.fresh("n")).metadata.update({"cost": 0.5})
    if data.draw(st.booleans()):
        key = "alpha" if rt.config["family"] == "linucb" else "prior_a"
        req.hyperparameters.update({key: data.draw(st.floats(0.5, 2.0))})
    return req


def valid_other(data: st.DataObject, h: Harness, rpc: str) -> Message:
    name = data.draw(st.sampled_from(SERVING))
    if rpc == "GetExperiment":
        return pb.GetExperimentRequest(namespace=NS, name=name)
    if rpc == "ListExperiments":
        return pb.ListExperimentsRequest(namespace=data.draw(st.sampled_from(["", NS])))
    if rpc == "GetStats":
        return pb.GetStatsRequest(namespace=NS, name=name)
    ids = data.draw(st.lists(st.sampled_from(h.decided[name]), unique=True, min_size=1, max_size=3))
    return pb.ActivateRequest(namespace=NS, name=name, event_ids=ids)


def odd_hyper_values(family: str, key: str) -> list[Any]:
    """Values for ``family``'s hyperparameter ``key`` a client might send by mistake or on
    purpose: of its own type (the other boolean, boundary numbers) and of the wrong one."""
    hp = policies.get(family).hypers.get(key)
    default = None if hp is None else hp.default
    if isinstance(default, bool):
        return [not default, not default, None, "true", 1.0]
    if isinstance(default, int | float):
        return [0.0, -1.0, 0.5, 1e308, 2.0**63, "1.5", True, None, [1.0]]
    if isinstance(default, str):
        return ["float32", "float64", "rbf", "linear", "", 1.0]
    return [None, 0.5, 2.0, "0.5", [1.0], [1.0, 0.5], {"a": 1.0}]


Mutator = Callable[[st.DataObject], str]


def pick(data: st.DataObject, seq: Sequence[Any]) -> Any:
    """One of ``seq``, about evenly (Hypothesis' sampled_from favours the first ones)."""
    return seq[data.draw(st.integers(0, 1023)) % len(seq)]


def set_hyper(struct: Any, family: str) -> Mutator:
    """Sets one of ``family``'s hyperparameters to an odd value: a generic mutation seldom
    picks the field, let alone a name the family has."""

    def mutate(data: st.DataObject) -> str:
        key = pick(data, hyper_keys(family))
        value = pick(data, odd_hyper_values(family, key))
        struct.update({key: value})
        return f"hyperparameters[{key!r}] = {value!r}"

    return mutate


def set_field(msg: Message, name: str, values: Sequence[Any]) -> Mutator:
    """Sets ``msg.name`` to one of ``values`` (edges a generic mutation seldom reaches)."""

    def mutate(data: st.DataObject) -> str:
        value = pick(data, values)
        setattr(msg, name, value)
        return f"{msg.DESCRIPTOR.name}.{name} = {value!r}"

    return mutate


def mutated(
    data: st.DataObject, fz: Fuzzer, request: Message, extra: Sequence[Mutator] = ()
) -> tuple[Message, bool]:
    """``request`` with 0-3 random mutations, half of them (if given) ``extra``'s targeted
    ones; True if it is still the valid original."""
    n = data.draw(st.integers(0, 3))
    done = []
    for _ in range(n):
        if len(extra) > 0 and data.draw(st.booleans()):
            done.append(pick(data, extra)(data))
        else:
            done.extend(fz.mutate(request, 1))
    note(f"mutations: {done}")
    note(f"request: {request}")
    return request, n == 0


def fuzzer(data: st.DataObject, h: Harness, *names: str) -> Fuzzer:
    """A Fuzzer whose namespace/name/id fields mostly name things that exist."""
    arms = st.sampled_from(["a", "b", "c", "d", "e", "f"])
    events = st.sampled_from([e for n in SERVING for e in h.decided[n]])
    fields = {
        "namespace": st.sampled_from([NS, NS, CREATE_NS]),
        "name": st.one_of(st.sampled_from(names), st.integers(0, 10**6).map(lambda i: f"r{i}")),
        "family": st.sampled_from(FAMILIES),
        "id": arms,
        "arm_id": arms,
        "arm_ids": arms,
        "eligible_arm_ids": arms,
        "retire_arm_ids": arms,
        "event_id": events,
        "event_ids": events,
    }
    return Fuzzer(data.draw, pool(h, *names), HYPER_KEYS, fields)


# --- the properties ---------------------------------------------------------------------------

UNARY = {
    "CreateExperiment": pb.CreateExperimentRequest,
    "GetExperiment": pb.GetExperimentRequest,
    "ListExperiments": pb.ListExperimentsRequest,
    "UpdateExperiment": pb.UpdateExperimentRequest,
    "Select": pb.SelectRequest,
    "Update": pb.UpdateRequest,
    "Activate": pb.ActivateRequest,
    "GetStats": pb.GetStatsRequest,
}


def test_every_rpc_is_in_the_fuzz_table() -> None:
    methods = pb.DESCRIPTOR.services_by_name["BanditService"].methods
    assert {m.name for m in methods} == set(UNARY) | {"StreamUpdates"}


# --- what the fuzzer found, pinned ----------------------------------------------------------
# Each case is one the fuzzer failed on (INTERNAL, a traceback in the log, or a half-applied
# change), kept as a plain test so it stays covered whatever examples Hypothesis draws.


def rejected_at(h: Harness, rpc: str, request: Message) -> tuple[Code, str]:
    """(code, field path) of a request that ``check`` finds rejected with every property."""
    code, details = check(h, rpc, request)
    return code, details.split(": ", 1)[0]


def test_found_nan_or_inf_in_a_struct_is_invalid_argument(h: Harness) -> None:
    # Was INTERNAL: json_format cannot turn NaN or inf into JSON.
    e = experiment("nan-hyper", "linucb", namespace=CREATE_NS, kind=pb.REWARD_KIND_BOUNDED, dim=2)
    e.hyperparameters.update({"alpha": math.nan})
    assert rejected_at(h, "CreateExperiment", pb.CreateExperimentRequest(experiment=e)) == (
        Code.INVALID_ARGUMENT,
        "experiment.hyperparameters.alpha",
    )
    e = experiment("inf-meta", "beta_ts", namespace=CREATE_NS)
    e.arms[1].metadata.update({"cost": [1.0, math.inf]})
    assert rejected_at(h, "CreateExperiment", pb.CreateExperimentRequest(experiment=e)) == (
        Code.INVALID_ARGUMENT,
        "experiment.arms[1].metadata.cost",
    )
    req = pb.UpdateExperimentRequest(namespace=NS, name="u-beta")
    req.hyperparameters.update({"prior_a": -math.inf})
    assert rejected_at(h, "UpdateExperiment", req) == (
        Code.INVALID_ARGUMENT,
        "hyperparameters.prior_a",
    )
    req = pb.UpdateExperimentRequest(namespace=NS, name="u-beta")
    req.add_arms.add(id=h.fresh("n")).metadata.update({"x": {"y": math.nan}})
    assert rejected_at(h, "UpdateExperiment", req) == (
        Code.INVALID_ARGUMENT,
        "add_arms[0].metadata.x",
    )


def test_found_client_sequence_beyond_the_logs_bigint(h: Harness) -> None:
    # Was INTERNAL, and the failed group commit failed every other caller's rows in it.
    def update(seq: int) -> pb.UpdateRequest:
        return pb.UpdateRequest(
            namespace=NS,
            name="beta",
            client_sequence=seq,
            rewards=[pb.Reward(event_id="beta-ev0", value=1.0)],
        )

    for seq in (2**63, 2**64 - 1):
        assert rejected_at(h, "Update", update(seq)) == (Code.INVALID_ARGUMENT, "client_sequence")
    assert check(h, "Update", update(2**63 - 1))[0] == Code.OK
    stream = [
        pb.StreamUpdatesRequest(update=update(7)),
        pb.StreamUpdatesRequest(update=update(2**63)),
    ]
    code, details = check_stream(h, stream)
    assert code == Code.INVALID_ARGUMENT
    assert details.startswith("message 1: update.client_sequence: ")


def test_found_per_arm_features_for_a_family_without_them(h: Harness) -> None:
    # Was INTERNAL at the compile ("this family takes one context per row").
    e = experiment("diag-afd", "diag_linucb", namespace=CREATE_NS, kind=pb.REWARD_KIND_REAL, dim=4)
    e.feature_schema.arm_feature_dimension = 2
    assert rejected_at(h, "CreateExperiment", pb.CreateExperimentRequest(experiment=e)) == (
        Code.INVALID_ARGUMENT,
        "experiment.feature_schema.arm_feature_dimension",
    )


def test_found_wait_window_beyond_the_duration_range(h: Harness) -> None:
    # Was INTERNAL after the experiment was created, and every later ListExperiments too (the
    # window did not fit back into a Duration).
    e = experiment("window-max", "beta_ts", namespace=CREATE_NS)
    e.reward.wait_window.seconds = 2**63 - 1
    assert rejected_at(h, "CreateExperiment", pb.CreateExperimentRequest(experiment=e)) == (
        Code.INVALID_ARGUMENT,
        "experiment.reward.wait_window",
    )
    e.reward.wait_window.seconds = 315_576_000_000  # the largest Duration: accepted
    code, _ = check(h, "CreateExperiment", pb.CreateExperimentRequest(experiment=e))
    assert code == Code.OK
    got = h.stub.GetExperiment(pb.GetExperimentRequest(namespace=CREATE_NS, name="window-max"))
    assert got.experiment.reward.wait_window.seconds == 315_576_000_000
    assert check(h, "ListExperiments", pb.ListExperimentsRequest())[0] == Code.OK


def test_found_shared_without_arm_features_by_update_experiment(h: Harness) -> None:
    # Was INTERNAL after the new revision was written to the log (the runtime kept the old one).
    req = pb.UpdateExperimentRequest(namespace=NS, name="u-lin")
    req.hyperparameters.update({"shared": True})
    assert rejected_at(h, "UpdateExperiment", req) == (
        Code.INVALID_ARGUMENT,
        "hyperparameters.shared",
    )


def test_found_nonfinite_propensities_are_refused_before_logging(h: Harness) -> None:
    # Was OK with NaN propensities; the decision row then failed its NOT NULL constraint at the
    # group commit (with every other row of that commit), so the answered decision was never
    # logged. The root cause is policy numerics (cascade_ts' (a + b)**2 overflows for
    # prior_b >= ~1e154); the service now refuses such a Select before writing anything.
    e = experiment("casc-huge", "cascade_ts", ("a", "b", "c"), namespace=CREATE_NS, slate_size=2)
    e.hyperparameters.update({"prior_b": 1e308})
    assert check(h, "CreateExperiment", pb.CreateExperimentRequest(experiment=e))[0] == Code.OK
    reward = pb.UpdateRequest(namespace=CREATE_NS, name="casc-huge")
    reward.observations.add(arm_ids=["a", "b"], rewards=[1.0, 0.0])
    assert check(h, "Update", reward)[0] == Code.OK
    select = pb.SelectRequest(namespace=CREATE_NS, name="casc-huge", items=[pb.SelectItem()])
    assert rejected_at(h, "Select", select) == (Code.FAILED_PRECONDITION, "name")


def test_found_arm_feature_length_message_is_formatted(h: Harness) -> None:
    e = experiment("afd-msg", "linucb", namespace=CREATE_NS, kind=pb.REWARD_KIND_BOUNDED, dim=2)
    e.feature_schema.arm_feature_dimension = 3
    e.arms[0].features.extend([1.0, 2.0])
    code, details = check(h, "CreateExperiment", pb.CreateExperimentRequest(experiment=e))
    assert code == Code.INVALID_ARGUMENT
    assert details == (
        "experiment.arms[0].features: expected 3 values "
        "(feature_schema.arm_feature_dimension), got 2"
    )


# Examples per parametrized case; Hypothesis favours the first of a sampled_from, so each
# experiment, family and RPC gets its own test rather than a share of one.
@pytest.mark.parametrize("rpc", sorted(UNARY))
@settings(SETTINGS, max_examples=40)
@given(data=st.data())
def test_random_messages(
    h: Harness, capfd: pytest.CaptureFixture[str], rpc: str, data: st.DataObject
) -> None:
    # UpdateExperiment may only reach the experiments kept for it (it may pause or retire).
    names = ADMIN if rpc == "UpdateExperiment" else (*SERVING, *ADMIN)
    fz = fuzzer(data, h, *names)
    if rpc == "UpdateExperiment":
        fz.pool = [s for s in fz.pool if s not in SERVING]
    request = fz.message(UNARY[rpc].DESCRIPTOR)
    note(f"{rpc}: {request}")
    check(h, rpc, request)
    assert "Traceback" not in capfd.readouterr().err


@pytest.mark.parametrize("name", SERVING)
@settings(SETTINGS, max_examples=40)
@given(data=st.data())
def test_mutated_select(
    h: Harness, capfd: pytest.CaptureFixture[str], name: str, data: st.DataObject
) -> None:
    request, valid = mutated(data, fuzzer(data, h, *SERVING), valid_select(data, h, name))
    check(h, "Select", request, must_pass=valid)
    assert "Traceback" not in capfd.readouterr().err


@pytest.mark.parametrize("name", SERVING)
@settings(SETTINGS, max_examples=40)
@given(data=st.data())
def test_mutated_update(
    h: Harness, capfd: pytest.CaptureFixture[str], name: str, data: st.DataObject
) -> None:
    base = valid_update(data, h, name)
    extra = [set_field(base, "client_sequence", [2**63 - 1, 2**63, 2**64 - 1])]
    request, valid = mutated(data, fuzzer(data, h, *SERVING), base, extra)
    check(h, "Update", request, must_pass=valid)
    assert "Traceback" not in capfd.readouterr().err


@pytest.mark.parametrize("name", ADMIN)
@settings(SETTINGS, max_examples=80)
@given(data=st.data())
def test_mutated_update_experiment(
    h: Harness, capfd: pytest.CaptureFixture[str], name: str, data: st.DataObject
) -> None:
    fz = fuzzer(data, h, *ADMIN)
    fz.pool = [s for s in fz.pool if s not in SERVING]
    fz.struct_keys = ADMIN_HYPER_KEYS
    base = valid_update_experiment(data, h, name)
    family = h.rt(name).config["family"]
    request, valid = mutated(data, fz, base, [set_hyper(base.hyperparameters, family)])
    code, _ = check(h, "UpdateExperiment", request, must_pass=valid)
    if code == Code.OK:
        exercise(h, base.namespace, base.name)
    assert "Traceback" not in capfd.readouterr().err


@pytest.mark.parametrize("rpc", ["GetExperiment", "ListExperiments", "GetStats", "Activate"])
@settings(SETTINGS, max_examples=40)
@given(data=st.data())
def test_mutated_reads_and_activate(
    h: Harness, capfd: pytest.CaptureFixture[str], rpc: str, data: st.DataObject
) -> None:
    request, valid = mutated(data, fuzzer(data, h, *SERVING), valid_other(data, h, rpc))
    check(h, rpc, request, must_pass=valid)
    assert "Traceback" not in capfd.readouterr().err


@settings(SETTINGS, max_examples=100)
@given(data=st.data())
def test_stream_updates(h: Harness, capfd: pytest.CaptureFixture[str], data: st.DataObject) -> None:
    fz = fuzzer(data, h, *SERVING)
    n = data.draw(st.integers(1, 3))
    requests = []
    valid = True
    for _ in range(n):
        if data.draw(st.integers(0, 4)) == 0:
            msg = fz.message(pb.StreamUpdatesRequest.DESCRIPTOR)
            valid = False
        else:
            name = SERVING[data.draw(st.integers(0, 1023)) % len(SERVING)]
            update, ok = mutated(data, fz, valid_update(data, h, name))
            msg = pb.StreamUpdatesRequest(update=update)
            valid = valid and ok
        requests.append(msg)
    note(f"stream: {requests}")
    code, _ = check_stream(h, requests)
    if valid:
        assert code == Code.OK
    assert "Traceback" not in capfd.readouterr().err


# Last: every experiment it creates makes the snapshots (and the learner's sweeps) longer.
@pytest.mark.parametrize("family", FAMILIES)
@settings(SETTINGS, max_examples=35)
@given(data=st.data())
def test_mutated_create_experiment(
    h: Harness, capfd: pytest.CaptureFixture[str], family: str, data: st.DataObject
) -> None:
    base = valid_create(data, h, family)
    taken = h.servicer.registry.get(base.experiment.namespace, base.experiment.name) is not None
    e = base.experiment
    extra = [
        set_hyper(e.hyperparameters, family),
        set_field(e.reward.wait_window, "seconds", [2**63 - 1, -(2**63), -1, 10**12, 10**15]),
        set_field(e.reward.wait_window, "nanos", [10**9, -1, 2**31 - 1, -(2**31)]),
        set_field(e.feature_schema, "dimension", [0, 1, 2, 65537]),
        set_field(e.feature_schema, "arm_feature_dimension", [1, 2, 3, 65537]),
        set_field(e.feature_schema, "sparse", [True, False]),
        set_field(e.feature_schema, "version", [2**31 - 1, 2**32 - 1]),
        set_field(e, "slate_size", [0, 1, 2, 3, 5, 2**32 - 1]),
    ]
    request, valid = mutated(data, fuzzer(data, h, *SERVING), base, extra)
    code, _ = check(h, "CreateExperiment", request, must_pass=valid and not taken)
    if code == Code.OK:  # what was created is what was asked for
        e = base.experiment  # (the request: mutated in place)
        got = h.stub.GetExperiment(pb.GetExperimentRequest(namespace=e.namespace, name=e.name))
        assert [a.id for a in got.experiment.arms] == [a.id for a in e.arms]
        exercise(h, e.namespace, e.name)
    assert "Traceback" not in capfd.readouterr().err
