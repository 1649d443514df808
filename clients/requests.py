"""Request building, response checks and the retry policy shared by ``Client`` and ``AsyncClient``.

Everything here is pure (no I/O): each client builds its request with these helpers, sends it
with its own transport (blocking or ``grpc.aio``), and converts the answer back with them. Ids
that make retries safe (event ids, reward ids) are generated here, once, before the first
attempt, so every attempt sends the same request.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import grpc
from banditd.v1 import bandit_pb2 as pb

from . import convert
from .convert import ArmFeaturesLike, ContextsLike
from .errors import BanditdError, InvalidArgument
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
)

__all__ = [
    "DEFAULT_TARGET",
    "RETRY_IDEMPOTENT_CALL",
    "RETRY_UNSAFE_CALL",
    "Attempts",
    "RewardsLike",
    "SelectItems",
    "acks_from_pb",
    "activate_request",
    "channel_options",
    "check_client_args",
    "create_experiment_request",
    "decisions_from_pb",
    "experiment_update_from_pb",
    "is_requested_experiment",
    "retry_codes",
    "retry_delay",
    "select_arm_order",
    "select_items",
    "select_request",
    "update_experiment_request",
    "update_is_idempotent",
    "update_request",
]

DEFAULT_TARGET = "127.0.0.1:50051"

# Rewards as the caller holds them: {event_id: value}, or a sequence of Reward objects and/or
# (event_id, value) pairs.
RewardsLike = Mapping[str, float] | Iterable[Reward | tuple[str, float]]

_C = grpc.StatusCode
# The server did not act on the request (or, rarely, the connection broke after it did).
RETRY_UNSAFE_CALL = frozenset({_C.UNAVAILABLE})
# For calls that are idempotent by construction (reads, and writes keyed by client ids) an
# ambiguous outcome is harmless, so timeouts and aborted transactions are retried too.
RETRY_IDEMPOTENT_CALL = frozenset({_C.UNAVAILABLE, _C.DEADLINE_EXCEEDED, _C.ABORTED})

_MiB = 1 << 20


# ---------------------------------------------------------------------------------------------
# Transport policy


@dataclass
class Attempts:
    count: int = 0


def check_client_args(timeout: float, retries: int) -> None:
    if timeout <= 0:
        raise ValueError(f"timeout: must be > 0, got {timeout}")
    if retries < 0:
        raise ValueError(f"retries: must be >= 0, got {retries}")


def channel_options(options: Sequence[tuple[str, Any]]) -> list[tuple[str, Any]]:
    # Select and GetStats answers grow with batch size and arm count; the 4 MiB gRPC default
    # is too small for a full batch of large slates.
    return [
        ("grpc.max_receive_message_length", 64 * _MiB),
        ("grpc.max_send_message_length", 64 * _MiB),
        *options,
    ]


def retry_codes(idempotent: bool) -> frozenset[grpc.StatusCode]:
    return RETRY_IDEMPOTENT_CALL if idempotent else RETRY_UNSAFE_CALL


def retry_delay(rng: random.Random, attempt: int, backoff: float, max_backoff: float) -> float:
    """The wait before retry number ``attempt + 1`` (attempt 0 is the first retry)."""
    cap = min(max_backoff, backoff * (2**attempt))
    # Half fixed, half random: always some wait, and no thundering herd.
    return cap / 2 + rng.uniform(0, cap / 2)


# ---------------------------------------------------------------------------------------------
# Experiments


def create_experiment_request(
    namespace: str,
    name: str,
    family: str,
    arms: Sequence[str | ArmSpec],
    *,
    hyperparameters: Mapping[str, Any] | None,
    dim: int,
    sparse: bool,
    arm_feature_dim: int,
    reward_kind: RewardKind,
    wait_window: float | None,
    default_reward: float | None,
    apply_mode: ApplyMode | None,
    train_on_holdout: bool,
    epsilon: float,
    slate_size: int,
    holdout_fraction: float,
    arm_features: Mapping[str, Any] | Any | None,
    arm_metadata: Mapping[str, Mapping[str, Any]] | None,
    schema_name: str,
    schema_version: int,
) -> pb.CreateExperimentRequest:
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
    return pb.CreateExperimentRequest(experiment=exp)


def is_requested_experiment(got: ExperimentInfo, req: pb.CreateExperimentRequest) -> bool:
    """Whether a stored experiment is the one ``req`` asked for (family and arm ids), so an
    ALREADY_EXISTS after an ambiguous attempt can be accepted as our own creation."""
    exp = req.experiment
    return got.family == exp.family and list(got.arm_ids) == [a.id for a in exp.arms]


def update_experiment_request(
    namespace: str,
    name: str,
    *,
    add_arms: Sequence[str | ArmSpec] | None,
    retire_arms: Sequence[str] | None,
    status: ExperimentStatus | None,
    epsilon: float | None,
    holdout_fraction: float | None,
    hyperparameters: Mapping[str, Any] | None,
    arm_features: Mapping[str, Any] | Any | None,
    arm_metadata: Mapping[str, Mapping[str, Any]] | None,
) -> pb.UpdateExperimentRequest:
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
    return req


def experiment_update_from_pb(resp: pb.UpdateExperimentResponse) -> ExperimentUpdate:
    return ExperimentUpdate(
        experiment=convert.experiment_from_pb(resp.experiment),
        new_revision=resp.new_revision,
    )


# ---------------------------------------------------------------------------------------------
# Decisions and feedback


@dataclass(frozen=True)
class SelectItems:
    """A Select batch checked item by item, before arm features (which may need the arm order)."""

    contexts: list[pb.Context | None]
    event_ids: list[str | None]
    unit_ids: list[str | None]
    eligible: list[list[str]]

    @property
    def batch(self) -> int:
        return len(self.contexts)


def select_items(
    contexts: ContextsLike,
    event_ids: Sequence[str | None] | None,
    unit_ids: str | Sequence[str | None] | None,
    eligible: Sequence[str] | Sequence[Sequence[str] | None] | None,
) -> SelectItems:
    ctxs = convert.to_contexts(contexts)
    batch = len(ctxs)
    ids = _per_item(event_ids, batch, "event_ids")
    if isinstance(unit_ids, str):
        units: list[str | None] = [unit_ids] * batch
    else:
        units = _per_item(unit_ids, batch, "unit_ids")
    elig = convert.to_eligible(eligible, batch)
    return SelectItems(ctxs, ids, units, elig)


def select_arm_order(
    eligible: Sequence[str] | Sequence[Sequence[str] | None] | None,
    arm_features: ArmFeaturesLike,
) -> tuple[Sequence[str] | None, bool]:
    """The arm order that rows of an ``arm_features`` array follow, and whether it must be
    looked up (the experiment's active arms) because no shared ``eligible`` list gives it."""
    order: Sequence[str] | None = None
    if arm_features is not None and not isinstance(arm_features, Mapping):
        order = convert.shared_eligible(eligible)
        if order is None and _is_array_like(arm_features):
            return None, True
    return order, False


def select_request(
    namespace: str,
    name: str,
    items: SelectItems,
    arm_features: ArmFeaturesLike,
    order: Sequence[str] | None,
    deferred: bool,
) -> tuple[pb.SelectRequest, list[str]]:
    """The SelectRequest and the event id of each item (missing ones generated as UUIDv7)."""
    batch = items.batch
    feats = convert.to_arm_features(arm_features, batch, order)
    req = pb.SelectRequest(namespace=namespace, name=name)
    sent: list[str] = []
    for i in range(batch):
        eid = items.event_ids[i] or new_event_id()
        sent.append(eid)
        item = req.items.add(
            event_id=eid,
            unit_id=items.unit_ids[i] or "",
            eligible_arm_ids=items.eligible[i],
            arm_features=feats[i],
            deferred=deferred,
        )
        ctx = items.contexts[i]
        if ctx is not None:
            item.context.CopyFrom(ctx)
    return req, sent


def decisions_from_pb(resp: pb.SelectResponse, sent: Sequence[str]) -> list[Decision]:
    """The decisions of a Select answer, checked one per item and in the order sent."""
    batch = len(sent)
    if len(resp.decisions) != batch:
        raise BanditdError(
            _C.INTERNAL, f"decisions: server answered {len(resp.decisions)} for {batch} items"
        )
    out = []
    for eid, d in zip(sent, resp.decisions, strict=True):
        if d.event_id and d.event_id != eid:
            raise BanditdError(_C.INTERNAL, f"decisions: event id {d.event_id} answered for {eid}")
        out.append(convert.decision_from_pb(d))
    return out


def update_request(
    namespace: str,
    name: str,
    rewards: RewardsLike | None,
    observations: Sequence[Observation] | None,
) -> pb.UpdateRequest:
    """The UpdateRequest; every reward without a reward id gets a fresh UUIDv7 one."""
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
    return req


def update_is_idempotent(req: pb.UpdateRequest) -> bool:
    # Observations carry no client id, so an ambiguous failure must not be retried blindly.
    return not req.observations


def acks_from_pb(resp: pb.UpdateResponse) -> list[Ack]:
    return [convert.ack_from_pb(a) for a in resp.acks]


def activate_request(
    namespace: str, name: str, event_ids: str | Sequence[str]
) -> pb.ActivateRequest:
    ids = [event_ids] if isinstance(event_ids, str) else list(event_ids)
    if not ids:
        raise InvalidArgument("event_ids: empty")
    return pb.ActivateRequest(namespace=namespace, name=name, event_ids=ids)


# ---------------------------------------------------------------------------------------------
# Helpers


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
