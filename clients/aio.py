"""Asyncio client for ``banditd.v1.BanditService`` (``grpc.aio``): the surface of ``Client``.

>>> from banditd.clients import AsyncClient
>>> async with AsyncClient("127.0.0.1:50051") as c:
...     await c.create_experiment("default", "ads", "beta_ts", ["a", "b", "c"])
...     [d] = await c.select("default", "ads")
...     await c.update("default", "ads", {d.event_id: 1.0})

Every method of :class:`~banditd.clients.Client` is here with the same name, parameters,
defaults, return values and exceptions, as a coroutine. Requests are built and answers checked by
the same code (``requests``, ``convert``), and retries follow the same policy: event ids and
reward ids are generated before the first attempt and re-sent on every retry, so a retried
Select returns the recorded decisions and a retried Update cannot apply a reward twice; those
calls and the reads are retried on UNAVAILABLE, DEADLINE_EXCEEDED and ABORTED, the others
(CreateExperiment, UpdateExperiment, Update with direct observations) on UNAVAILABLE only. The
waits between attempts are ``asyncio.sleep``, so a retrying call never blocks the event loop.

One client serves any number of concurrent calls (``asyncio.gather``) over one channel. The
channel is opened on the first call, on the running event loop, and belongs to that loop: use
one ``AsyncClient`` per event loop.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Mapping, Sequence
from typing import Any

import grpc
import grpc.aio
from banditd.v1 import bandit_pb2 as pb
from banditd.v1 import bandit_pb2_grpc as pb_grpc

from . import convert
from . import requests as rq
from .convert import ArmFeaturesLike, ContextsLike
from .errors import AlreadyExists, Unavailable, from_rpc_error
from .models import (
    Ack,
    ApplyMode,
    ArmSpec,
    Decision,
    ExperimentInfo,
    ExperimentStatus,
    ExperimentUpdate,
    Observation,
    RewardKind,
    Stats,
)
from .requests import DEFAULT_TARGET, RewardsLike

__all__ = ["DEFAULT_TARGET", "AsyncClient", "RewardsLike"]

_C = grpc.StatusCode


class AsyncClient:
    """An asyncio connection to one banditd server (share one per event loop).

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
        rq.check_client_args(timeout, retries)
        self.target = target
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self._metadata = tuple(metadata)
        self._credentials = credentials
        self._options = rq.channel_options(options)
        # Opened by the first call: a grpc.aio channel binds to the loop it is created on, and
        # the client may be made before that loop runs (e.g. outside asyncio.run).
        self._channel: grpc.aio.Channel | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stub: Any = None
        self._closed = False
        self._rng = random.Random()

    # -----------------------------------------------------------------------------------------
    # Lifecycle

    async def close(self) -> None:
        self._closed = True
        if self._channel is not None:
            await self._channel.close(None)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"AsyncClient({self.target!r}, timeout={self.timeout}, retries={self.retries})"

    async def wait_ready(self, timeout: float = 30.0, service: str = "") -> None:
        """Wait until the server's standard health check reports SERVING.

        The server compiles every experiment's policy before it reports SERVING, so the first
        Select after this does not pay for compilation. Raises :class:`Unavailable` on timeout.
        """
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        stub = health_pb2_grpc.HealthStub(self._connect())
        deadline = time.monotonic() + timeout
        last = "no answer"
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise Unavailable(_C.UNAVAILABLE, f"server {self.target} not serving: {last}")
            try:
                resp = await stub.Check(
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
            await asyncio.sleep(min(0.1, max(0.0, deadline - time.monotonic())))

    # -----------------------------------------------------------------------------------------
    # Experiments

    async def create_experiment(
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
        req = rq.create_experiment_request(
            namespace,
            name,
            family,
            arms,
            hyperparameters=hyperparameters,
            dim=dim,
            sparse=sparse,
            arm_feature_dim=arm_feature_dim,
            reward_kind=reward_kind,
            wait_window=wait_window,
            default_reward=default_reward,
            apply_mode=apply_mode,
            train_on_holdout=train_on_holdout,
            epsilon=epsilon,
            slate_size=slate_size,
            holdout_fraction=holdout_fraction,
            arm_features=arm_features,
            arm_metadata=arm_metadata,
            schema_name=schema_name,
            schema_version=schema_version,
        )
        attempts = rq.Attempts()
        try:
            resp = await self._call("CreateExperiment", req, idempotent=False, attempts=attempts)
            return convert.experiment_from_pb(resp.experiment)
        except AlreadyExists:
            # A retry after an attempt whose outcome was unknown: the first attempt may be the
            # one that created it. Accept the experiment if it is the one we asked for.
            if attempts.count <= 1:
                raise
            got = await self.get_experiment(namespace, name)
            if not rq.is_requested_experiment(got, req):
                raise
            return got

    async def get_experiment(self, namespace: str, name: str) -> ExperimentInfo:
        resp = await self._call(
            "GetExperiment", pb.GetExperimentRequest(namespace=namespace, name=name)
        )
        return convert.experiment_from_pb(resp.experiment)

    async def list_experiments(self, namespace: str | None = None) -> list[ExperimentInfo]:
        """Experiments of ``namespace``; None or "" lists every namespace."""
        resp = await self._call(
            "ListExperiments", pb.ListExperimentsRequest(namespace=namespace or "")
        )
        return [convert.experiment_from_pb(e) for e in resp.experiments]

    async def update_experiment(
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
        req = rq.update_experiment_request(
            namespace,
            name,
            add_arms=add_arms,
            retire_arms=retire_arms,
            status=status,
            epsilon=epsilon,
            holdout_fraction=holdout_fraction,
            hyperparameters=hyperparameters,
            arm_features=arm_features,
            arm_metadata=arm_metadata,
        )
        resp = await self._call("UpdateExperiment", req, idempotent=False)
        return rq.experiment_update_from_pb(resp)

    # -----------------------------------------------------------------------------------------
    # Decisions and feedback

    async def select(
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

        Event ids are fixed before the first attempt, so a retry gets the recorded decisions.
        """
        items = rq.select_items(contexts, event_ids, unit_ids, eligible)
        order, lookup = rq.select_arm_order(eligible, arm_features)
        if lookup:
            order = (await self.get_experiment(namespace, name)).active_arm_ids
        req, sent = rq.select_request(namespace, name, items, arm_features, order, deferred)
        resp = await self._call("Select", req)
        return rq.decisions_from_pb(resp, sent)

    async def update(
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

        Reward ids are fixed before the first attempt, so a retry applies nothing twice.
        """
        req = rq.update_request(namespace, name, rewards, observations)
        resp = await self._call("Update", req, idempotent=rq.update_is_idempotent(req))
        return rq.acks_from_pb(resp)

    async def activate(self, namespace: str, name: str, event_ids: str | Sequence[str]) -> int:
        """Start the wait window of deferred decisions; returns how many were activated."""
        resp = await self._call("Activate", rq.activate_request(namespace, name, event_ids))
        return int(resp.activated)

    async def stats(self, namespace: str, name: str) -> Stats:
        resp = await self._call("GetStats", pb.GetStatsRequest(namespace=namespace, name=name))
        return convert.stats_from_pb(resp)

    # -----------------------------------------------------------------------------------------
    # Transport

    def _connect(self) -> grpc.aio.Channel:
        """The channel, opened on the running loop at first use."""
        loop = asyncio.get_running_loop()
        if self._channel is None:
            if self._closed:
                raise RuntimeError("AsyncClient: closed")
            if self._credentials is None:
                self._channel = grpc.aio.insecure_channel(self.target, options=self._options)
            else:
                self._channel = grpc.aio.secure_channel(
                    self.target, self._credentials, options=self._options
                )
            self._loop = loop
        elif self._loop is not None and self._loop is not loop:
            raise RuntimeError(
                "AsyncClient: used from another event loop than the one it connected on "
                "(make one client per event loop)"
            )
        return self._channel

    def _delay(self, attempt: int) -> float:
        return rq.retry_delay(self._rng, attempt, self.backoff, self.max_backoff)

    async def _call(
        self,
        method: str,
        request: Any,
        *,
        idempotent: bool = True,
        attempts: rq.Attempts | None = None,
    ) -> Any:
        if self._stub is None:
            self._stub = pb_grpc.BanditServiceStub(self._connect())
        elif self._channel is not None:
            self._connect()  # the loop check
        rpc = getattr(self._stub, method)
        retry_on = rq.retry_codes(idempotent)
        attempts = attempts or rq.Attempts()
        while True:
            attempts.count += 1
            try:
                return await rpc(request, timeout=self.timeout, metadata=self._metadata)
            except grpc.RpcError as e:
                err = from_rpc_error(e)
            if err.code not in retry_on or attempts.count > self.retries:
                raise err
            await asyncio.sleep(self._delay(attempts.count - 1))
