"""gRPC BanditService: validate, decide, log, acknowledge.

Every handler validates the whole request before changing anything, so a rejected request
leaves state and log untouched; errors carry a status code and a message naming the field.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

import grpc
import numpy as np
import sqlalchemy as sa
from banditd import policies
from banditd.clients.ids import new_event_id
from banditd.policies.family import Family
from banditd.store import errors as store_errors
from banditd.store import rows
from banditd.store.packing import pack_f64, pack_i32
from banditd.v1 import bandit_pb2 as pb
from banditd.v1 import bandit_pb2_grpc as pb_grpc
from google.protobuf import struct_pb2

from . import spec
from .config import ServerConfig
from .errors import ServiceError, invalid, not_found, precondition, unavailable
from .learner import Learner
from .orphans import SKEW_S, CrashWindows, uuid7_time
from .precompile import Precompiler
from .registry import Registry, compile_policy, fresh_state, sync_arms
from .runtime import Runtime, unit_hash
from .stats import experiment_stats
from .writer import BufferFull, GroupCommitter

log = logging.getLogger("banditd.service")
# Production: how long an Update waits for a decision another replica made this recently.
CROSS_REPLICA_WAIT_S = 0.5
RECENT_ID_S = 5.0
RECENT_S = 120.0  # how long this process remembers its own decisions for replays
RECENT_MAX = 500_000
MAX_CLIENT_SEQUENCE = 2**63 - 1
R = TypeVar("R")
# Connection failures raised by SQLAlchemy itself, for the few reads that go to the engine
# directly (the store's own calls turn them into ``Unavailable``).
DB_DOWN = (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.DisconnectionError)

STATUS = {"active": pb.EXPERIMENT_STATUS_ACTIVE, "paused": pb.EXPERIMENT_STATUS_PAUSED}
KIND = {
    "reward": pb.FEEDBACK_KIND_REWARD,
    "default": pb.FEEDBACK_KIND_DEFAULT,
    "duplicate": pb.FEEDBACK_KIND_DUPLICATE,
    "late": pb.FEEDBACK_KIND_LATE,
    "orphan": pb.FEEDBACK_KIND_ORPHAN,
    "observation": pb.FEEDBACK_KIND_OBSERVATION,
}
REWARD_KIND = {v: k for k, v in spec.REWARD_KINDS.items()}
APPLY_MODE = {v: k for k, v in spec.APPLY_MODES.items()}


def handler(fn: Callable[..., R]) -> Callable[..., R]:
    """Map ServiceError to its status; anything else is logged once, without leaking details."""

    def wrapped(self: Servicer, request: Any, context: grpc.ServicerContext) -> R:
        try:
            return fn(self, request, context)
        except ServiceError as e:
            context.abort(e.code, e.message)
        except store_errors.Unavailable as e:
            context.abort(grpc.StatusCode.UNAVAILABLE, f"database: {e}")
        except DB_DOWN as e:  # a read straight on the engine (stats reports), not via the store
            context.abort(
                grpc.StatusCode.UNAVAILABLE,
                f"database: database unavailable: {getattr(e, 'orig', None) or e}",
            )
        except Exception:  # noqa: BLE001 - the one place an unexpected error becomes INTERNAL
            log.exception("%s failed", fn.__name__)
            context.abort(grpc.StatusCode.INTERNAL, "internal error (logged by the server)")
        raise AssertionError("unreachable")  # context.abort raises

    wrapped.__name__ = fn.__name__
    return wrapped


_DECISION_FIELDS = tuple(f.name for f in dataclasses.fields(rows.Decision))


def _compact(d: rows.Decision) -> tuple[Any, ...]:
    """The decision's fields in order (``rows.Decision(*t)`` rebuilds it)."""
    return tuple(getattr(d, f) for f in _DECISION_FIELDS)


def _mask(eligible: np.ndarray | None, active: np.ndarray) -> np.ndarray:
    """An item's eligible mask; None (no eligible_arm_ids) means every active arm."""
    return active if eligible is None else eligible


class Servicer(pb_grpc.BanditServiceServicer):
    def __init__(
        self,
        config: ServerConfig,
        registry: Registry,
        learner: Learner,
        decisions: GroupCommitter[rows.Decision, bool],
        feedback: GroupCommitter[rows.Feedback, rows.Committed],
        notify: Callable[[int], None],
        *,
        clock: Callable[[], float] = time.time,
        orphans: CrashWindows | None = None,
    ) -> None:
        self.clock = clock
        self.orphans = orphans
        self.precompiler: Precompiler | None = None  # set by server.start when enabled
        self.after_admin: Callable[[], None] | None = None  # after an experiment is created/changed
        self.shared_log = False  # production: other replicas create experiments in the same log
        self.config = config
        self.registry = registry
        self.log = registry.log
        self.learner = learner
        self.decisions = decisions
        self.feedback = feedback
        self.notify = notify
        self._admin = threading.Lock()  # experiment create/update are rare; serialize them
        # Decisions handed to the writer and not yet known committed, by (experiment, event):
        # repeats and rewards find them here before the flush.
        self._inflight: dict[tuple[int, str], rows.Decision] = {}
        self._inflight_lock = threading.Lock()
        # Decisions this process made in the last RECENT_S seconds. A client-chosen UUIDv7 id
        # newer than both this process's start and that horizon can only have been decided here,
        # so a miss in this map proves it is new without asking the log.
        # Held as plain tuples: the collector stops tracking tuples of atoms, so 100k+ of them
        # add nothing to its full passes (as objects they made ~150 ms stalls).
        self._recent: OrderedDict[tuple[int, str], tuple[float, tuple[Any, ...]]] = OrderedDict()
        self._started = clock()

    # --- experiments ---------------------------------------------------------------------------

    def _runtime(self, namespace: str, name: str, prefix: str = "") -> Runtime:
        spec.check_name(f"{prefix}namespace", namespace)
        spec.check_name(f"{prefix}name", name)
        rt = self.registry.get(namespace, name)
        if rt is None and self.shared_log:
            rt = self._load_shared(namespace, name)
        if rt is None:
            if not any(r.exp.namespace == namespace for r in self.registry.all()):
                raise not_found(f"{prefix}namespace", f"no namespace {namespace!r}")
            raise not_found(f"{prefix}name", f"no experiment {name!r} in namespace {namespace!r}")
        return rt

    def _load_shared(self, namespace: str, name: str) -> Runtime | None:
        """Production: an experiment another replica created is in the shared log."""
        exp = self.log.get_experiment(namespace, name)
        if exp is None:
            return None
        with self._admin:
            rt = self.registry.get(namespace, name)
            if rt is None:
                rt = self.registry.build(exp)
                compile_policy(rt.config, rt.policy, len(rt.arms))
                self.registry.put(rt)
        return rt

    def _to_pb(self, rt: Runtime) -> pb.Experiment:
        c = rt.config
        e = pb.Experiment(
            namespace=rt.exp.namespace,
            name=rt.exp.name,
            family=c["family"],
            revision=rt.revision,
            epsilon=c["epsilon"],
            slate_size=c["slate_size"],
            holdout_fraction=c["holdout_fraction"],
            status=STATUS[rt.exp.status],
            version=int(rt.state.meta.version),
        )
        hyper = struct_pb2.Struct()
        hyper.update(c["hyperparameters"])
        e.hyperparameters.CopyFrom(hyper)
        e.feature_schema.name = c["feature_schema"]["name"]
        e.feature_schema.version = c["feature_schema"]["version"]
        e.feature_schema.dimension = c["dim"]
        e.feature_schema.sparse = c["sparse"]
        e.feature_schema.arm_feature_dimension = c["arm_feature_dim"]
        r = c["reward"]
        e.reward.kind = REWARD_KIND[r["kind"]]
        e.reward.apply_mode = APPLY_MODE[r["apply_mode"]]
        e.reward.train_on_holdout = r["train_on_holdout"]
        e.reward.wait_window.FromNanoseconds(int(round(r["wait_window_s"] * 1e9)))
        if r["default_reward"] is not None:
            e.reward.default_reward = r["default_reward"]
        for a in rt.arms:
            arm = e.arms.add(id=a.arm_id, active=a.active)
            if a.metadata:
                arm.metadata.update(dict(a.metadata))
            f = a.features_array()
            if f is not None:
                arm.features.extend(f.tolist())
        e.create_time.FromNanoseconds(int(rt.exp.created_at * 1e9))
        e.update_time.FromNanoseconds(int(rt.exp.updated_at * 1e9))
        return e

    @handler
    def CreateExperiment(
        self, request: pb.CreateExperimentRequest, context: Any
    ) -> pb.CreateExperimentResponse:
        if not request.HasField("experiment"):
            raise invalid("experiment", "is required")
        config, arms = spec.parse_experiment(request.experiment)
        e = request.experiment
        with self._admin:
            if self.registry.get(e.namespace, e.name) is not None:
                raise ServiceError(
                    grpc.StatusCode.ALREADY_EXISTS,
                    "experiment.name",
                    f"{e.namespace}/{e.name} already exists",
                )
            # Compile before the experiment is visible: the first Select must not pay for it.
            policy = policies.make(config["family"], **config["hyperparameters"])
            compile_policy(config, policy, len(arms))
            if self.precompiler is not None:
                self.precompiler.submit(config, policy, len(arms))
            try:
                exp = self.log.create_experiment(
                    e.namespace,
                    e.name,
                    config=config,
                    status=config["status"],
                    revision=rows.RevisionSpec(
                        1,
                        config["family"],
                        config["hyperparameters"],
                        config["policy_dim"],
                        config["feature_schema"]["name"],
                        config["feature_schema"]["version"],
                    ),
                    arms=[
                        rows.ArmSpec(
                            a.arm_id,
                            a.metadata,
                            None if a.features is None else pack_f64(a.features),
                        )
                        for a in arms
                    ],
                )
            except store_errors.AlreadyExists as err:
                raise ServiceError(
                    grpc.StatusCode.ALREADY_EXISTS, "experiment.name", str(err)
                ) from None
            rt = self.registry.build(exp)
            self.registry.put(rt)
        log.info("created %s (%s, %d arms)", rt.key, config["family"], len(arms))
        if self.after_admin is not None:
            self.after_admin()
        return pb.CreateExperimentResponse(experiment=self._to_pb(rt))

    @handler
    def GetExperiment(
        self, request: pb.GetExperimentRequest, context: Any
    ) -> pb.GetExperimentResponse:
        rt = self._runtime(request.namespace, request.name)
        return pb.GetExperimentResponse(experiment=self._to_pb(rt))

    @handler
    def ListExperiments(
        self, request: pb.ListExperimentsRequest, context: Any
    ) -> pb.ListExperimentsResponse:
        if request.namespace:
            spec.check_name("namespace", request.namespace)
        rts = sorted(self.registry.all(), key=lambda r: (r.exp.namespace, r.exp.name))
        return pb.ListExperimentsResponse(
            experiments=[
                self._to_pb(rt)
                for rt in rts
                if not request.namespace or rt.exp.namespace == request.namespace
            ]
        )

    @handler
    def UpdateExperiment(
        self, request: pb.UpdateExperimentRequest, context: Any
    ) -> pb.UpdateExperimentResponse:
        with self._admin:
            rt = self._runtime(request.namespace, request.name)
            config = dict(rt.config)
            status = rt.exp.status
            if request.status == pb.EXPERIMENT_STATUS_PAUSED:
                status = "paused"
            elif request.status == pb.EXPERIMENT_STATUS_ACTIVE:
                status = "active"
            elif request.status != pb.EXPERIMENT_STATUS_UNSPECIFIED:
                raise invalid("status", f"unknown status {request.status}")
            if request.HasField("epsilon"):
                eps = spec.finite("epsilon", request.epsilon)
                if not 0.0 <= eps <= 1.0:
                    raise invalid("epsilon", f"must be in [0, 1], got {eps}")
                config["epsilon"] = eps
            if request.HasField("holdout_fraction"):
                hold = spec.finite("holdout_fraction", request.holdout_fraction)
                if not 0.0 <= hold < 1.0:
                    raise invalid("holdout_fraction", f"must be in [0, 1), got {hold}")
                config["holdout_fraction"] = hold
            new_hyper = dict(config["hyperparameters"])
            if request.HasField("hyperparameters"):
                given = spec.struct_to_dict("hyperparameters", request.hyperparameters)
                merged = {**new_hyper, **given}
                new_hyper = spec.resolve_hyper("hyperparameters", config["family"], merged)
                spec.check_slate(
                    "hyperparameters.positions", config["family"], new_hyper, config["slate_size"]
                )
                spec.check_shared("hyperparameters.shared", new_hyper, config["arm_feature_dim"])
            existing = {a.arm_id for a in rt.arms}
            new_arms = spec.parse_arms(
                "add_arms", request.add_arms, config["arm_feature_dim"], existing
            )
            retire = list(request.retire_arm_ids)
            for i, arm_id in enumerate(retire):
                if arm_id not in rt.slot_of:
                    raise not_found(f"retire_arm_ids[{i}]", f"unknown arm {arm_id!r}")
                if retire.index(arm_id) != i:
                    raise invalid(f"retire_arm_ids[{i}]", f"arm {arm_id!r} listed twice")
            left = (
                sum(a.active for a in rt.arms)
                + len(new_arms)
                - sum(1 for a in rt.arms if a.active and a.arm_id in retire)
            )
            if left < max(1, config["slate_size"]):
                raise precondition(
                    "retire_arm_ids",
                    f"would leave {left} active arms; the experiment needs "
                    f"at least {max(1, config['slate_size'])}",
                )
            new_revision = spec.identity_changed(
                config["family"], config["hyperparameters"], new_hyper
            )
            config["hyperparameters"] = new_hyper
            config["status"] = status
            # Build (and for a new revision compile) the policy before anything is written: a
            # failure here must leave the log and the runtime as they were.
            policy = policies.make(config["family"], **new_hyper)
            if new_revision:
                compile_policy(config, policy, len(rt.arms) + len(new_arms))
            # All checks passed: write to the log, then the live runtime.
            if new_arms:
                self.log.add_arms(
                    rt.exp.id,
                    [
                        rows.ArmSpec(
                            a.arm_id,
                            a.metadata,
                            None if a.features is None else pack_f64(a.features),
                        )
                        for a in new_arms
                    ],
                )
            if retire:
                self.log.retire_arms(rt.exp.id, retire)
            if new_revision:
                self.log.add_revision(
                    rt.exp.id,
                    rows.RevisionSpec(
                        rt.revision + 1,
                        config["family"],
                        new_hyper,
                        config["policy_dim"],
                        config["feature_schema"]["name"],
                        config["feature_schema"]["version"],
                    ),
                )
            exp = self.log.update_experiment(rt.exp.id, status=status, config=config)
            with rt.lock:
                arms = self.log.list_arms(rt.exp.id)
                if new_revision:
                    if self.precompiler is not None:
                        self.precompiler.submit(config, policy, len(arms))
                    state = fresh_state(
                        config, policy, len(arms), exp.revision, int(rt.state.meta.version)
                    )
                else:
                    state = rt.state
                    if policy.hyper != rt.policy.hyper:  # e.g. serving dtype: same stats
                        state = state._replace(
                            cache=policy.kernels.refresh(policy.kernels.h, state.stats)
                        )
                state = sync_arms(policy, state, arms)
                rt.exp, rt.config, rt.policy, rt.arms, rt.state = exp, config, policy, arms, state
                rt.reindex()
                if new_revision:
                    self.registry.checkpoint(rt)  # recovery starts the new revision here
        if self.after_admin is not None:
            self.after_admin()
        return pb.UpdateExperimentResponse(experiment=self._to_pb(rt), new_revision=new_revision)

    # --- Select --------------------------------------------------------------------------------

    @handler
    def Select(self, request: pb.SelectRequest, context: Any) -> pb.SelectResponse:
        rt = self._runtime(request.namespace, request.name)
        if rt.exp.status == "paused":
            raise precondition("name", f"experiment {rt.key} is paused")
        n = len(request.items)
        if n == 0:
            raise invalid("items", "at least one item is required")
        if n > self.config.max_items:
            raise invalid("items", f"{n} items is above the limit of {self.config.max_items}")
        # The learner publishes the state, then its watermark: reading the watermark first means
        # it never claims more than the state we decide with reflects.
        wm = rt.watermark
        state = rt.state  # one snapshot for the whole request
        cfg = rt.config
        version, active = rt.host_meta(state)
        cap = active.shape[0]
        n_active = int(active.sum())
        k = cfg["slate_size"]
        event_ids: list[str] = []
        seen: dict[str, int] = {}
        ctx_vals, ctx_idx, dense_rows, arm_over = [], [], [], []
        elig_rows: list[np.ndarray | None] = []
        for i, item in enumerate(request.items):
            eid = item.event_id or new_event_id()
            if len(eid) > 128:
                raise invalid(f"items[{i}].event_id", "is longer than 128 characters")
            if eid in seen:
                raise invalid(f"items[{i}].event_id", f"repeats items[{seen[eid]}].event_id")
            seen[eid] = i
            event_ids.append(eid)
            v, idx = rt.parse_context(
                f"items[{i}].context", item.context if item.HasField("context") else None
            )
            ctx_vals.append(v)
            ctx_idx.append(idx)
            dense_rows.append(rt.dense(v, idx))
            if item.eligible_arm_ids:
                mask = np.zeros(cap, bool)
                for j, arm_id in enumerate(item.eligible_arm_ids):
                    slot = rt.slot_of.get(arm_id)
                    if slot is None:
                        raise invalid(
                            f"items[{i}].eligible_arm_ids[{j}]", f"unknown arm {arm_id!r}"
                        )
                    if not active[slot]:
                        raise invalid(
                            f"items[{i}].eligible_arm_ids[{j}]", f"arm {arm_id!r} is retired"
                        )
                    mask[slot] = True
                n_elig = int(mask.sum())
            else:
                mask, n_elig = None, n_active
            if n_elig < max(k, 1):
                raise invalid(
                    f"items[{i}].eligible_arm_ids",
                    f"{n_elig} eligible arms; slate_size is {k}",
                )
            elig_rows.append(mask)
            over = rt.parse_arm_features(f"items[{i}].arm_features", item.arm_features)
            arm_over.append(over)
            if len(item.unit_id) > 256:
                raise invalid(f"items[{i}].unit_id", "is longer than 256 characters")
        feats = None
        if cfg["arm_feature_dim"]:
            feats = [
                rt.arm_matrix(
                    f"items[{i}].arm_features",
                    arm_over[i],
                    np.nonzero(_mask(elig_rows[i], active))[0],
                )
                for i in range(n)
            ]
        # Validation is complete: nothing below rejects the request, except a policy that
        # gives non-finite probabilities (refused in _decide, before anything is logged).
        # Only ids the client chose can have been decided before; fresh server ids cannot.
        given = [event_ids[i] for i in range(n) if request.items[i].event_id]
        replay = self._recorded(rt, given) if given else {}
        todo = [i for i in range(n) if event_ids[i] not in replay]
        now = self.clock()
        decided: dict[int, rows.Decision] = {}
        if todo:
            decided = self._decide(
                rt,
                state,
                request,
                todo,
                event_ids,
                ctx_vals,
                ctx_idx,
                dense_rows,
                feats,
                arm_over,
                elig_rows,
                now,
                version,
                active,
            )
        resp = pb.SelectResponse()
        for i in range(n):
            d = replay.get(event_ids[i]) or decided[i]
            out = resp.decisions.add(
                event_id=d.event_id,
                propensity=d.propensity,
                revision=d.revision,
                version=d.version,
                holdout=d.holdout,
                applied_watermark=wm,
                deferred=d.deferred,
                replayed=event_ids[i] in replay,
            )
            out.arm_ids.extend(rt.arms[s].arm_id for s in d.chosen)
            out.slot_propensities.extend(d.slot_propensities)
            out.decide_time.FromNanoseconds(int(d.created_at * 1e9))
        return resp

    def _recorded(self, rt: Runtime, event_ids: list[str]) -> dict[str, rows.Decision]:
        found: dict[str, rows.Decision] = {}
        fresh_after = max(self._started, self.clock() - RECENT_S) + SKEW_S
        rest = []
        with self._inflight_lock:
            for e in event_ids:
                d = self._inflight.get((rt.exp.id, e))
                hit = self._recent.get((rt.exp.id, e))
                if d is not None or hit is not None:
                    found[e] = d if d is not None else rows.Decision(*hit[1])  # type: ignore[index]
                    continue
                t = uuid7_time(e)
                if t is None or t < fresh_after:
                    rest.append(e)
        if rest:
            found.update(self.log.get_decisions(rt.exp.id, rest))
        return found

    def _decide(
        self,
        rt: Runtime,
        state: policies.State,
        request: pb.SelectRequest,
        todo: list[int],
        event_ids: list[str],
        ctx_vals: list[np.ndarray],
        ctx_idx: list[np.ndarray | None],
        dense_rows: list[np.ndarray],
        feats: list[np.ndarray] | None,
        arm_over: list[dict[int, np.ndarray]],
        elig_rows: list[np.ndarray | None],
        now: float,
        version: int,
        active: np.ndarray,
    ) -> dict[int, rows.Decision]:
        cfg = rt.config
        fam = policies.get(cfg["family"])
        ranked = fam.ranked
        k = max(1, int(cfg["slate_size"])) if ranked else 1
        hold_frac = cfg["holdout_fraction"]
        items = request.items
        holdout = [False] * len(todo)
        if hold_frac > 0:
            for j, i in enumerate(todo):
                unit = items[i].unit_id
                key = unit if unit else event_ids[i]
                holdout[j] = unit_hash(f"{rt.exp.id}:holdout", key) < hold_frac
        keys = policies.derive_keys(rt.scope, [event_ids[i] for i in todo])
        # [rows, k]: the arm slots of each decision in order, and P(a_j | a_<j) per slot
        chosen = np.zeros((len(todo), k), np.int64)
        props = np.zeros((len(todo), k))
        pol_rows = [j for j, h in enumerate(holdout) if not h]
        every = len(pol_rows) == len(todo)  # no holdout row: no fancy indexing below
        if pol_rows:
            idx = [todo[j] for j in pol_rows]
            if not cfg["dim"]:
                ctx = np.zeros((len(idx), 0))
            elif len(idx) == 1:
                ctx = dense_rows[idx[0]][None]
            else:
                ctx = np.stack([dense_rows[i] for i in idx])
            pol_keys = keys if every else keys[pol_rows]
            x = rt.policy_rows(ctx, [feats[i] for i in idx] if feats is not None else None)
            # None = every active arm: the policy then uses its device-resident all-true mask
            eligible = (
                None
                if all(elig_rows[i] is None for i in idx)
                else np.stack([_mask(elig_rows[i], active) for i in idx])
            )
            if ranked:
                out = rt.policy.select(state, x, pol_keys, eligible, epsilon=cfg["epsilon"], k=k)
            else:
                when = now if fam.uses_time else None
                out = rt.policy.select(state, x, pol_keys, eligible, epsilon=cfg["epsilon"], t=when)
            arms_out = np.asarray(out.arms).reshape(len(pol_rows), k)
            props_out = np.asarray(out.propensity, np.float64).reshape(len(pol_rows), k)
            if every:
                chosen, props = arms_out.astype(np.int64), props_out
            else:
                chosen[pol_rows] = arms_out
                props[pol_rows] = props_out
        for j, h in enumerate(holdout):
            if h:  # uniform over the eligible arms, from the decision's own key
                slots = np.nonzero(_mask(elig_rows[todo[j]], active))[0]
                rng = np.random.default_rng(keys[j].astype(np.uint64))
                if ranked:  # a uniformly random ordered k-subset: 1/E, 1/(E-1), ...
                    chosen[j] = rng.choice(slots, size=k, replace=False)
                    props[j] = 1.0 / (slots.size - np.arange(k))
                else:
                    chosen[j, 0] = slots[rng.integers(slots.size)]
                    props[j, 0] = 1.0 / slots.size
        if not np.isfinite(props).all():
            # e.g. overflowing posteriors of extreme priors. Refused before anything is logged:
            # a NaN propensity would fail the decision's row (and its group commit's others).
            raise precondition(
                "name",
                f"the policy of {rt.key} gave non-finite choice probabilities; "
                "its hyperparameters may be out of range",
            )
        chosen_l, props_l = chosen.tolist(), props.tolist()  # Python ints and floats
        window = cfg["reward"]["wait_window_s"]
        decided: dict[int, rows.Decision] = {}
        for j, i in enumerate(todo):
            item = items[i]
            over = arm_over[i]
            elig = elig_rows[i]
            d = rows.Decision(
                experiment_id=rt.exp.id,
                event_id=event_ids[i],
                revision=rt.revision,
                version=version,
                chosen=tuple(chosen_l[j]),
                slot_propensities=tuple(props_l[j]),
                created_at=now,
                context=pack_f64(ctx_vals[i]) if ctx_vals[i].size else None,
                sparse_indices=None if ctx_idx[i] is None else pack_i32(ctx_idx[i]),
                arm_feature_slots=pack_i32(sorted(over)) if over else None,
                arm_features=pack_f64(np.stack([over[s] for s in sorted(over)])) if over else None,
                eligible=None
                if elig is None or np.array_equal(elig, active)
                else pack_i32(np.nonzero(elig)[0]),
                unit_id=item.unit_id or None,
                holdout=holdout[j],
                deferred=item.deferred,
                deadline=(now + window) if window > 0 and not item.deferred else None,
            )
            decided[i] = d
        batch: list[rows.Decision] = []
        fut: Future[list[bool]] | None = None
        with self._inflight_lock:
            for i, d in decided.items():
                prev = self._inflight.get((d.experiment_id, d.event_id))
                if prev is not None:  # a concurrent Select of the same id won: answer with it
                    decided[i] = prev  # and neither write nor later un-register it
                else:
                    batch.append(d)
            if batch:
                # Submitted before anyone can see them: a full buffer (the database is down)
                # refuses the decisions before any other Select could answer with one of them.
                try:
                    fut = self.decisions.submit(batch)
                except BufferFull as e:
                    why = "unavailable" if e.cause is not None else "too slow"
                    raise unavailable(
                        "database",
                        f"the decision buffer is full: {e.buffered} decisions wait for the "
                        f"event log (limit {e.limit}, --decision-buffer), which is {why}; "
                        "Select makes no decision it cannot log, retry later",
                    ) from None
                for d in batch:
                    self._inflight[(d.experiment_id, d.event_id)] = d
                    self._recent[(d.experiment_id, d.event_id)] = (now, _compact(d))
            horizon = now - RECENT_S
            while self._recent and (
                len(self._recent) > RECENT_MAX or next(iter(self._recent.values()))[0] < horizon
            ):
                self._recent.popitem(last=False)
        if fut is not None:

            def landed(_: Any) -> None:
                self._landed(batch)

            fut.add_done_callback(landed)
        return decided

    def _landed(self, batch: list[rows.Decision]) -> None:
        with self._inflight_lock:
            for d in batch:
                self._inflight.pop((d.experiment_id, d.event_id), None)

    # --- Update --------------------------------------------------------------------------------

    def _feedback_rows(
        self, rt: Runtime, request: pb.UpdateRequest, prefix: str = ""
    ) -> list[rows.Feedback]:
        cfg = rt.config
        reward_kind = cfg["reward"]["kind"]
        fam = policies.get(cfg["family"])
        n = len(request.rewards) + len(request.observations)
        if n == 0:
            raise invalid(f"{prefix}rewards", "at least one reward or observation is required")
        if n > self.config.max_items:
            raise invalid(
                f"{prefix}rewards",
                f"{n} rewards and observations is above the limit of {self.config.max_items}",
            )
        if request.client_sequence > MAX_CLIENT_SEQUENCE:  # the log stores a signed BIGINT
            raise invalid(
                f"{prefix}client_sequence",
                f"must be at most {MAX_CLIENT_SEQUENCE}, got {request.client_sequence}",
            )
        ranked = fam.ranked
        ids = []
        for i, r in enumerate(request.rewards):
            f = f"{prefix}rewards[{i}]"
            if not r.event_id:
                raise invalid(f"{f}.event_id", "is required")
            if ranked:
                # value is the slate reward, logged as sent (e.g. clicked anywhere, or a count);
                # the policy learns from the per-slot values.
                spec.finite(f"{f}.value", r.value)
                if not r.slot_values:
                    raise invalid(
                        f"{f}.slot_values",
                        f"family {fam.name!r} ranks arms: send one value per arm of the "
                        "decision, in order",
                    )
                for j, v in enumerate(r.slot_values):
                    spec.check_reward(f"{f}.slot_values[{j}]", v, reward_kind)
            else:
                spec.check_reward(f"{f}.value", r.value, reward_kind)
                if r.slot_values:
                    raise invalid(
                        f"{f}.slot_values",
                        "per-slot rewards need a ranked family (slate_size > 1); "
                        f"{fam.name!r} chooses one arm",
                    )
            for key, val in r.metrics.items():
                if not math.isfinite(val):
                    raise invalid(f"{f}.metrics[{key!r}]", "must be finite")
            ids.append(r.event_id)
        decisions = self._await_decisions(rt, ids, f"{prefix}rewards[{{}}].event_id")
        out: list[rows.Feedback] = []
        for i, r in enumerate(request.rewards):
            d = decisions.get(r.event_id)
            kind: rows.FeedbackKind = "reward"
            if d is None:
                if self.orphans is None or not self.orphans.is_orphan(r.event_id):
                    raise not_found(
                        f"{prefix}rewards[{i}].event_id", f"no decision {r.event_id!r} in {rt.key}"
                    )
                kind = "orphan"  # issued, but its decision row was lost in a crash
            if ranked:
                want = len(d.chosen) if d is not None else max(1, int(cfg["slate_size"]))
                if len(r.slot_values) != want:
                    raise invalid(
                        f"{prefix}rewards[{i}].slot_values",
                        f"expected {want} values (one per arm of the decision), "
                        f"got {len(r.slot_values)}",
                    )
            out.append(
                rows.Feedback(
                    experiment_id=rt.exp.id,
                    kind=kind,
                    # late is judged by the store at the commit, against the window's end
                    deadline=None if d is None else d.deadline,
                    reward=r.value,
                    event_id=r.event_id,
                    slot_rewards=tuple(r.slot_values),
                    metrics=dict(r.metrics) or None,
                    reward_id=r.reward_id or None,
                    client_seq=request.client_sequence or None,
                )
            )
        for i, o in enumerate(request.observations):
            f = f"{prefix}observations[{i}]"
            slots = self._observed_slots(rt, fam, o, f)
            prop = None
            if o.HasField("propensity"):
                prop = spec.finite(f"{f}.propensity", o.propensity)
                if not 0.0 < prop <= 1.0:
                    raise invalid(f"{f}.propensity", f"must be in (0, 1], got {prop}")
            elif fam.needs_propensity:
                raise invalid(
                    f"{f}.propensity",
                    f"family {fam.name!r} needs the logged propensity of observations",
                )
            v, idx = rt.parse_context(f"{f}.context", o.context if o.HasField("context") else None)
            over = rt.parse_arm_features(f"{f}.arm_features", o.arm_features)
            if cfg["arm_feature_dim"]:
                rt.arm_matrix(f"{f}.arm_features", over, np.asarray(slots))
            out.append(
                rows.Feedback(
                    experiment_id=rt.exp.id,
                    kind="observation",
                    # ranked: the list's total (e.g. its clicks); the policy learns per slot
                    reward=float(sum(o.rewards)),
                    slot_rewards=tuple(o.rewards) if ranked else (),
                    chosen=tuple(slots),
                    propensity=prop,
                    context=pack_f64(v) if v.size else None,
                    sparse_indices=None if idx is None else pack_i32(idx),
                    arm_feature_slots=pack_i32(sorted(over)) if over else None,
                    arm_features=pack_f64(np.stack([over[s] for s in sorted(over)]))
                    if over
                    else None,
                    client_seq=request.client_sequence or None,
                )
            )
        return out

    @staticmethod
    def _observed_slots(rt: Runtime, fam: Family, o: pb.Observation, f: str) -> list[int]:
        """The arm slots of an observation, validated with its rewards (one per arm)."""
        kind = rt.config["reward"]["kind"]
        if not fam.ranked and len(o.arm_ids) != 1:
            raise invalid(f"{f}.arm_ids", "a single-arm family takes exactly one arm id")
        if not o.arm_ids:
            raise invalid(f"{f}.arm_ids", "at least one arm id (the list shown, in order)")
        positions = rt.policy.hyper.get("positions")
        if positions is not None and len(o.arm_ids) > int(positions):
            raise invalid(
                f"{f}.arm_ids",
                f"{len(o.arm_ids)} arms is more than the policy's {int(positions)} positions",
            )
        slots: list[int] = []
        for j, arm_id in enumerate(o.arm_ids):
            slot = rt.slot_of.get(arm_id)
            if slot is None:
                raise invalid(f"{f}.arm_ids[{j}]", f"unknown arm {arm_id!r}")
            if slot in slots:
                raise invalid(f"{f}.arm_ids[{j}]", f"arm {arm_id!r} is listed twice")
            slots.append(slot)
        if len(o.rewards) != len(slots):
            want = f"{len(slots)} rewards (one per arm)" if len(slots) > 1 else "exactly one reward"
            raise invalid(f"{f}.rewards", f"expected {want}, got {len(o.rewards)}")
        for j, v in enumerate(o.rewards):
            spec.check_reward(f"{f}.rewards[{j}]", v, kind)
        return slots

    def _await_decisions(
        self, rt: Runtime, ids: list[str], field: str = "rewards[{}].event_id"
    ) -> dict[str, rows.Decision]:
        """The logged decisions of ``ids``; one still in the writer's queue waits one flush.
        One still not logged after it (the database is down) is UNAVAILABLE, named by
        ``field`` formatted with its index."""
        if not ids:
            return {}
        with self._inflight_lock:
            queued = any((rt.exp.id, e) in self._inflight for e in ids)
        if queued:
            self.decisions.flush(timeout=10)
            with self._inflight_lock:
                held = [e for e in ids if (rt.exp.id, e) in self._inflight]
            if held:
                # Still in the writer's buffer: the database is down (the flush does not wait
                # for it then) or slow. Not NOT_FOUND: the decision exists, it is not logged yet.
                down = self.decisions.unavailable
                why = "the event log is unavailable" if down is not None else "the flush timed out"
                raise unavailable(
                    field.format(ids.index(held[0])),
                    f"decision {held[0]!r} is not logged yet ({why}; "
                    f"{self.decisions.buffered_rows} decisions buffered); retry later",
                )
        want = list(dict.fromkeys(ids))
        found = self.log.get_decisions(rt.exp.id, want)
        if self.shared_log and len(found) < len(want):
            # Another replica may have answered the Select and still hold the decision in its
            # writer's queue: wait out one of its flushes for ids issued moments ago.
            deadline = time.monotonic() + CROSS_REPLICA_WAIT_S
            now = self.clock()
            late = [
                e
                for e in want
                if e not in found and (t := uuid7_time(e)) is not None and now - t < RECENT_ID_S
            ]
            while late and time.monotonic() < deadline:
                time.sleep(0.01)
                found.update(self.log.get_decisions(rt.exp.id, late))
                late = [e for e in late if e not in found]
        return found

    def _submit(self, rt: Runtime, fb: list[rows.Feedback]) -> Callable[[], list[rows.Committed]]:
        """Hand rows to the group commit; returns a wait for their acks. A row whose reward id
        is already stored (a retried Update) is not written again: its first ack is returned."""
        rids = [r.reward_id for r in fb if r.reward_id]
        known = self.log.find_by_reward_id(rt.exp.id, rids) if rids else {}
        fresh = [r for r in fb if not (r.reward_id and r.reward_id in known)]
        fut = self.feedback.submit(fresh) if fresh else None

        def wait() -> list[rows.Committed]:
            got = iter(fut.result() if fut is not None else [])
            return [
                known[r.reward_id] if r.reward_id and r.reward_id in known else next(got)
                for r in fb
            ]

        return wait

    def _commit(self, rt: Runtime, fb: list[rows.Feedback]) -> list[pb.FeedbackAck]:
        committed = self._submit(rt, fb)()
        self.notify(rt.exp.id)
        return self._acks(fb, committed)

    @staticmethod
    def _acks(fb: list[rows.Feedback], committed: list[rows.Committed]) -> list[pb.FeedbackAck]:
        acks = []
        for row, c in zip(fb, committed, strict=True):
            acks.append(
                pb.FeedbackAck(
                    event_id=row.event_id or "",
                    sequence=c.seq,
                    kind=KIND[c.kind],
                    duplicate=c.kind == "duplicate",
                    late=c.kind == "late",
                    orphan=c.kind == "orphan",
                )
            )
        return acks

    @handler
    def Update(self, request: pb.UpdateRequest, context: Any) -> pb.UpdateResponse:
        rt = self._runtime(request.namespace, request.name)
        fb = self._feedback_rows(rt, request)
        return pb.UpdateResponse(acks=self._commit(rt, fb))

    def StreamUpdates(self, request_iterator: Any, context: Any) -> Any:
        """Pipelined: a reader thread validates and submits each message to the group commit
        while earlier ones are still committing; acks go out in message order as commits land,
        each with the highest client sequence committed so far."""
        work: queue.Queue[Any] = queue.Queue(maxsize=256)  # bounds the uncommitted backlog
        done = object()

        def reader() -> None:
            try:
                for i, msg in enumerate(request_iterator):
                    req = msg.update
                    try:
                        rt = self._runtime(req.namespace, req.name, "update.")
                        fb = self._feedback_rows(rt, req, "update.")
                        work.put((req, rt, fb, self._submit(rt, fb)))
                    except ServiceError as e:
                        e.message = f"message {i}: {e.message}"
                        work.put(e)
                        return
                    except store_errors.Unavailable as e:
                        work.put(unavailable("database", f"message {i}: {e}"))
                        return
            except Exception as e:  # noqa: BLE001 - cancelled stream or a bug: end the stream
                work.put(e)
            finally:
                work.put(done)

        threading.Thread(target=reader, name="stream-reader", daemon=True).start()
        highest = 0
        while True:
            item = work.get()
            if item is done:
                return
            if isinstance(item, ServiceError):
                context.abort(item.code, item.message)
            if isinstance(item, Exception):
                if context.is_active():
                    log.error("StreamUpdates failed: %s", item)
                    context.abort(grpc.StatusCode.INTERNAL, "internal error (logged by server)")
                return
            req, rt, fb, fut = item
            try:
                committed = fut()
            except store_errors.Unavailable as e:
                context.abort(grpc.StatusCode.UNAVAILABLE, f"database: {e}")
            self.notify(rt.exp.id)
            highest = max(highest, req.client_sequence)
            yield pb.StreamUpdatesResponse(
                committed_client_sequence=highest, acks=self._acks(fb, committed)
            )

    @handler
    def Activate(self, request: pb.ActivateRequest, context: Any) -> pb.ActivateResponse:
        rt = self._runtime(request.namespace, request.name)
        ids = list(request.event_ids)
        if not ids:
            raise invalid("event_ids", "at least one event id is required")
        if len(ids) > self.config.max_items:
            raise invalid(
                "event_ids", f"{len(ids)} ids is above the limit of {self.config.max_items}"
            )
        found = self._await_decisions(rt, ids, "event_ids[{}]")
        for i, e in enumerate(ids):
            if e not in found:
                raise not_found(f"event_ids[{i}]", f"no decision {e!r} in {rt.key}")
        done = self.log.activate(
            rt.exp.id, ids, now=self.clock(), window=rt.config["reward"]["wait_window_s"]
        )
        return pb.ActivateResponse(activated=len(done))

    # --- stats ---------------------------------------------------------------------------------

    @handler
    def GetStats(self, request: pb.GetStatsRequest, context: Any) -> pb.GetStatsResponse:
        rt = self._runtime(request.namespace, request.name)
        self.decisions.flush(timeout=10)
        return experiment_stats(rt, self.log)
