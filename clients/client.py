"""Synchronous client for ``banditd.v1.BanditService``: plain Python/numpy in and out.

>>> from banditd.clients import Client
>>> with Client("127.0.0.1:50051") as c:
...     c.create_experiment("default", "ads", "beta_ts", ["a", "b", "c"])
...     [d] = c.select("default", "ads")
...     c.update("default", "ads", {d.event_id: 1.0})

Retries. Every Select item carries an event id and every reward a reward id, generated here
(UUIDv7) when the caller gives none, so a retried Select returns the recorded decisions and a
retried Update cannot apply a reward twice. Those calls, and the read-only ones, are retried on
UNAVAILABLE, DEADLINE_EXCEEDED and ABORTED. Calls without such ids (CreateExperiment,
UpdateExperiment, Update with direct observations) are retried on UNAVAILABLE only, where the
server has normally not acted on the request.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import grpc
from banditd.v1 import bandit_pb2 as pb
from banditd.v1 import bandit_pb2_grpc as pb_grpc

from . import convert
from .convert import ArmFeaturesLike, ContextsLike
from .errors import AlreadyExists, BanditdError, InvalidArgument, Unavailable, from_rpc_error
from .ids import new_event_id
from .models import (
    Ack,
    ApplyMode,
    ArmSpec,
    Decision,
    ExperimentInfo,
    ExperimentStatus,
    ExperimentUpdate,
    Observation,
    Reward,
    RewardKind,
    Stats,
)

__all__ = ["DEFAULT_TARGET", "Client", "RewardsLike"]

DEFAULT_TARGET = "127.0.0.1:50051"

# Rewards as the caller holds them: {event_id: value}, or a sequence of Reward objects and/or
# (event_id, value) pairs.
RewardsLike = Mapping[str, float] | Iterable[Reward | tuple[str, float]]

_C = grpc.StatusCode
# The server did not act on the request (or, rarely, the connection broke after it did).
_RETRY_UNSAFE_CALL = frozenset({_C.UNAVAILABLE})
# For calls that are idempotent by construction (reads, and writes keyed by client ids) an
# ambiguous outcome is harmless, so timeouts and aborted transactions are retried too.
_RETRY_IDEMPOTENT_CALL = frozenset({_C.UNAVAILABLE, _C.DEADLINE_EXCEEDED, _C.ABORTED})

_MiB = 1 << 20


@dataclass
class _Attempts:
    count: int = 0


class Client:
    """A connection to one banditd server (thread-safe; share one per process).

    Args:
        target: ``host:port`` of the server (any gRPC target string).
        timeout: deadline of each attempt, in seconds.
        retries: extra attempts after a transient failure (0 = none).
        backoff: first retry delay in seconds; doubles per retry, capped at ``max_backoff``, with
            jitter so many clients do not retry in lockstep.
        max_backoff: the cap on a single retry delay, in seconds.
        credentials: channel credentials for TLS; None = plaintext.
        metadata: (key, value) pairs sent with every call (e.g. an auth token).
        options: extra gRPC channel options.
    """

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        timeout: float = 10.0,
        retries: int = 3,
        backoff: float = 0.05,
        max_backoff: float = 2.0,
        credentials: grpc.ChannelCredentials | None = None,
        metadata: Sequence[tuple[str, str]] = (),
        options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        if timeout <= 0:
            raise ValueError(f"timeout: must be > 0, got {timeout}")
        if retries < 0:
            raise ValueError(f"retries: must be >= 0, got {retries}")
        self.target = target
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self._metadata = tuple(metadata)
        # Select and GetStats answers grow with batch size and arm count; the 4 MiB gRPC default
        # is too small for a full batch of large slates.
        opts = [
            ("grpc.max_receive_message_length", 64 * _MiB),
            ("grpc.max_send_message_length", 64 * _MiB),
            *options,
        ]
        if credentials is None:
            self._channel = grpc.insecure_channel(target, options=opts)
        else:
            self._channel = grpc.secure_channel(target, credentials, options=opts)
        self._stub = pb_grpc.BanditServiceStub(self._channel)
        self._rng = random.Random()
        self._rng_lock = threading.Lock()

    # -----------------------------------------------------------------------------------------
    # Lifecycle

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client({self.target!r}, timeout={self.timeout}, retries={self.retries})"

    def wait_ready(self, timeout: float = 30.0, service: str = "") -> None:
        """Block until the server's standard health check reports SERVING.

        The server compiles every experiment's policy before it reports SERVING, so the first
        Select after this does not pay for compilation. Raises :class:`Unavailable` on timeout.
        """
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        stub = health_pb2_grpc.HealthStub(self._channel)
        deadline = time.monotonic() + timeout
        last = "no answer"
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise Unavailable(_C.UNAVAILABLE, f"server {self.target} not serving: {last}")
            try:
                resp = stub.Check(
                    health_pb2.HealthCheckRequest(service=service),
                    timeout=min(left, 2.0),
                    wait_for_ready=True,
                    metadata=self._metadata,
                )
                if resp.status == health_pb2.HealthCheckResponse.SERVING:
                    return
                last = health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)
            except grpc.RpcError as e:
                last = str(from_rpc_error(e))
            time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))

    # -----------------------------------------------------------------------------------------
    # Experiments

    def create_experiment(
        self,
        namespace: str,
        name: str,
        family: str,
        arms: Sequence[str | ArmSpec],
        *,
        hyperparameters: Mapping[str, Any] | None = None,
        dim: int = 0,
        sparse: bool = False,
        arm_feature_dim: int = 0,
        reward_kind: RewardKind = "binary",
        wait_window: float | None = None,
        default_reward: float | None = None,
        apply_mode: ApplyMode | None = None,
        train_on_holdout: bool = False,
        epsilon: float = 0.0,
        slate_size: int = 1,
        holdout_fraction: float = 0.0,
        arm_features: Mapping[str, Any] | Any | None = None,
        arm_metadata: Mapping[str, Mapping[str, Any]] | None = None,
        schema_name: str = "",
        schema_version: int = 0,
    ) -> ExperimentInfo:
        """Create an experiment (revision 1).

        ``arms`` are ids or :class:`ArmSpec`; ``arm_features`` (static, ``{arm: vector}`` or
        ``[N, d]`` in arm order) and ``arm_metadata`` (``{arm: {key: value}}``) fill in arms
        given as plain ids. ``wait_window`` is in seconds (None = no limit); ``apply_mode`` None
        lets the server choose (``at_window_close`` when a default reward is set).
        """
        exp = pb.Experiment(
            namespace=namespace,
            name=name,
            family=family,
            arms=convert.to_arms(arms, arm_features, arm_metadata),
            feature_schema=pb.FeatureSchema(
                name=schema_name,
                version=schema_version,
                dimension=dim,
                sparse=sparse,
                arm_feature_dimension=arm_feature_dim,
            ),
            reward=pb.RewardSpec(
                kind=cast(Any, convert.reward_kind_value(reward_kind)),
                train_on_holdout=train_on_holdout,
            ),
            epsilon=epsilon,
            slate_size=slate_size,
            holdout_fraction=holdout_fraction,
        )
        hp = convert.to_struct(hyperparameters, "hyperparameters")
        if hp is not None:
            exp.hyperparameters.CopyFrom(hp)
        if wait_window is not None:
            convert.set_duration(exp.reward.wait_window, wait_window, "wait_window")
        if default_reward is not None:
            exp.reward.default_reward = float(default_reward)
        if apply_mode is not None:
            exp.reward.apply_mode = cast(Any, convert.apply_mode_value(apply_mode))

        attempts = _Attempts()
        try:
            resp = self._call(
                "CreateExperiment",
                pb.CreateExperimentRequest(experiment=exp),
                idempotent=False,
                attempts=attempts,
            )
            return convert.experiment_from_pb(resp.experiment)
        except AlreadyExists:
            # A retry after an attempt whose outcome was unknown: the first attempt may be the
            # one that created it. Accept the experiment if it is the one we asked for.
            if attempts.count <= 1:
                raise
            got = self.get_experiment(namespace, name)
            if got.family != family or list(got.arm_ids) != [a.id for a in exp.arms]:
                raise
            return got

    def get_experiment(self, namespace: str, name: str) -> ExperimentInfo:
        resp = self._call("GetExperiment", pb.GetExperimentRequest(namespace=namespace, name=name))
        return convert.experiment_from_pb(resp.experiment)

    def list_experiments(self, namespace: str | None = None) -> list[ExperimentInfo]:
        """Experiments of ``namespace``; None or "" lists every namespace."""
        resp = self._call("ListExperiments", pb.ListExperimentsRequest(namespace=namespace or ""))
        return [convert.experiment_from_pb(e) for e in resp.experiments]

    def update_experiment(
        self,
        namespace: str,
        name: str,
        *,
        add_arms: Sequence[str | ArmSpec] | None = None,
        retire_arms: Sequence[str] | None = None,
        status: ExperimentStatus | None = None,
        epsilon: float | None = None,
        holdout_fraction: float | None = None,
        hyperparameters: Mapping[str, Any] | None = None,
        arm_features: Mapping[str, Any] | Any | None = None,
        arm_metadata: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> ExperimentUpdate:
        """Change an experiment in place; arguments left as None are unchanged.

        ``status`` is "active" or "paused". Changing an identity hyperparameter creates a new
        revision (``result.new_revision``). ``arm_features``/``arm_metadata`` apply to
        ``add_arms`` given as plain ids.
        """
        req = pb.UpdateExperimentRequest(namespace=namespace, name=name)
        if add_arms:
            req.add_arms.extend(convert.to_arms(add_arms, arm_features, arm_metadata, "add_arms"))
        if retire_arms:
            if isinstance(retire_arms, str):
                raise InvalidArgument("retire_arms: expected a list of arm ids, got a string")
            req.retire_arm_ids.extend(retire_arms)
        if status is not None:
            req.status = cast(Any, convert.status_value(status))
        if epsilon is not None:
            req.epsilon = float(epsilon)
        if holdout_fraction is not None:
            req.holdout_fraction = float(holdout_fraction)
        hp = convert.to_struct(hyperparameters, "hyperparameters")
        if hp is not None:
            req.hyperparameters.CopyFrom(hp)
        resp = self._call("UpdateExperiment", req, idempotent=False)
        return ExperimentUpdate(
            experiment=convert.experiment_from_pb(resp.experiment),
            new_revision=resp.new_revision,
        )

    # -----------------------------------------------------------------------------------------
    # Decisions and feedback

    def select(
        self,
        namespace: str,
        name: str,
        contexts: ContextsLike = None,
        *,
        event_ids: Sequence[str | None] | None = None,
        unit_ids: str | Sequence[str | None] | None = None,
        eligible: Sequence[str] | Sequence[Sequence[str] | None] | None = None,
        arm_features: ArmFeaturesLike = None,
        deferred: bool = False,
    ) -> list[Decision]:
        """Choose arm(s) for each context; one :class:`Decision` per context, in order.

        ``contexts``: a 2-D array ``[B, d]``, one vector, ``{index: value}`` (sparse), a list of
        vectors/dicts, None (one non-contextual decision) or a count ``n``.
        ``event_ids``: one per decision (missing ones are generated as UUIDv7); pass the same ids
        again to get the recorded decisions back.
        ``unit_ids``: one per decision, or one string for the whole batch (sticky holdout).
        ``eligible``: one list of arm ids for the batch, or one list (or None) per decision.
        ``arm_features``: ``{arm: vector}`` (shared), ``{arm: [B, d]}``, a list of ``{arm:
        vector}`` per decision, or an array ``[B, N, d]``/``[N, d]`` whose rows follow
        ``eligible`` (when it is one list) or else the experiment's active arms.
        """
        ctxs = convert.to_contexts(contexts)
        batch = len(ctxs)
        ids = _per_item(event_ids, batch, "event_ids")
        if isinstance(unit_ids, str):
            units: list[str | None] = [unit_ids] * batch
        else:
            units = _per_item(unit_ids, batch, "unit_ids")
        elig = convert.to_eligible(eligible, batch)
        order: Sequence[str] | None = None
        if arm_features is not None and not isinstance(arm_features, Mapping):
            order = convert.shared_eligible(eligible)
            if order is None and _is_array_like(arm_features):
                order = self.get_experiment(namespace, name).active_arm_ids
        feats = convert.to_arm_features(arm_features, batch, order)

        req = pb.SelectRequest(namespace=namespace, name=name)
        sent: list[str] = []
        for i in range(batch):
            eid = ids[i] or new_event_id()
            sent.append(eid)
            item = req.items.add(
                event_id=eid,
                unit_id=units[i] or "",
                eligible_arm_ids=elig[i],
                arm_features=feats[i],
                deferred=deferred,
            )
            ctx = ctxs[i]
            if ctx is not None:
                item.context.CopyFrom(ctx)
        resp = self._call("Select", req)
        if len(resp.decisions) != batch:
            raise BanditdError(
                _C.INTERNAL, f"decisions: server answered {len(resp.decisions)} for {batch} items"
            )
        out = []
        for eid, d in zip(sent, resp.decisions, strict=True):
            if d.event_id and d.event_id != eid:
                raise BanditdError(
                    _C.INTERNAL, f"decisions: event id {d.event_id} answered for {eid}"
                )
            out.append(convert.decision_from_pb(d))
        return out

    def update(
        self,
        namespace: str,
        name: str,
        rewards: RewardsLike | None = None,
        *,
        observations: Sequence[Observation] | None = None,
    ) -> list[Ack]:
        """Report rewards by event id and/or direct observations.

        ``rewards``: ``{event_id: value}``, or a sequence of :class:`Reward` and ``(event_id,
        value)`` pairs. Returns one :class:`Ack` per reward, then one per observation; a reward
        for an event id that already has one is acknowledged with ``duplicate=True`` and not
        applied.
        """
        req = pb.UpdateRequest(namespace=namespace, name=name)
        for i, r in enumerate(_rewards(rewards)):
            msg = convert.to_reward(r, f"rewards[{i}]")
            if not msg.reward_id:
                msg.reward_id = new_event_id()
            req.rewards.append(msg)
        for i, o in enumerate(observations or ()):
            if not isinstance(o, Observation):
                raise InvalidArgument(f"observations[{i}]: expected an Observation")
            req.observations.append(convert.to_observation(o, f"observations[{i}]"))
        if not req.rewards and not req.observations:
            raise InvalidArgument("rewards: nothing to report (no rewards or observations)")
        # Observations carry no client id, so an ambiguous failure must not be retried blindly.
        resp = self._call("Update", req, idempotent=not req.observations)
        return [convert.ack_from_pb(a) for a in resp.acks]

    def activate(self, namespace: str, name: str, event_ids: str | Sequence[str]) -> int:
        """Start the wait window of deferred decisions; returns how many were activated."""
        ids = [event_ids] if isinstance(event_ids, str) else list(event_ids)
        if not ids:
            raise InvalidArgument("event_ids: empty")
        resp = self._call(
            "Activate", pb.ActivateRequest(namespace=namespace, name=name, event_ids=ids)
        )
        return int(resp.activated)

    def stats(self, namespace: str, name: str) -> Stats:
        resp = self._call("GetStats", pb.GetStatsRequest(namespace=namespace, name=name))
        return convert.stats_from_pb(resp)

    # -----------------------------------------------------------------------------------------
    # Transport

    def _delay(self, attempt: int) -> float:
        cap = min(self.max_backoff, self.backoff * (2**attempt))
        with self._rng_lock:
            # Half fixed, half random: always some wait, and no thundering herd.
            return cap / 2 + self._rng.uniform(0, cap / 2)

    def _call(
        self,
        method: str,
        request: Any,
        *,
        idempotent: bool = True,
        attempts: _Attempts | None = None,
    ) -> Any:
        rpc = getattr(self._stub, method)
        retry_on = _RETRY_IDEMPOTENT_CALL if idempotent else _RETRY_UNSAFE_CALL
        attempts = attempts or _Attempts()
        while True:
            attempts.count += 1
            try:
                return rpc(request, timeout=self.timeout, metadata=self._metadata)
            except grpc.RpcError as e:
                err = from_rpc_error(e)
            if err.code not in retry_on or attempts.count > self.retries:
                raise err
            time.sleep(self._delay(attempts.count - 1))


def _is_array_like(x: Any) -> bool:
    return not isinstance(x, Mapping) and not (
        isinstance(x, Sequence) and any(isinstance(m, Mapping) for m in x)
    )


def _per_item(values: Sequence[str | None] | None, batch: int, what: str) -> list[str | None]:
    if values is None:
        return [None] * batch
    if isinstance(values, str):
        if batch == 1:
            return [values]
        raise InvalidArgument(f"{what}: expected {batch} ids, got one string")
    out = list(values)
    if len(out) != batch:
        raise InvalidArgument(f"{what}: {len(out)} ids for {batch} decisions")
    for i, v in enumerate(out):
        if v is not None and not isinstance(v, str):
            raise InvalidArgument(f"{what}[{i}]: expected a string, got {type(v).__name__}")
    if what == "event_ids":
        seen: set[str] = set()
        for i, v in enumerate(out):
            if v and v in seen:
                raise InvalidArgument(f"{what}[{i}]: {v} is repeated in the batch")
            if v:
                seen.add(v)
    return out


def _rewards(rewards: RewardsLike | None) -> list[Reward]:
    if rewards is None:
        return []
    if isinstance(rewards, Mapping):
        return [Reward(event_id=str(k), value=v) for k, v in rewards.items()]
    out: list[Reward] = []
    for i, r in enumerate(rewards):
        if isinstance(r, Reward):
            out.append(r)
        elif isinstance(r, tuple) and len(r) == 2:
            out.append(Reward(event_id=str(r[0]), value=r[1]))
        else:
            raise InvalidArgument(f"rewards[{i}]: expected a Reward or an (event_id, value) pair")
    return out
