"""Python clients for banditd (``Client``, asyncio ``AsyncClient``) and the ``banditd`` CLI
(``banditd.clients.cli``)."""

from .aio import AsyncClient
from .client import DEFAULT_TARGET, Client
from .errors import (
    AlreadyExists,
    BanditdError,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unavailable,
    Unimplemented,
)
from .ids import new_event_id, uuid7, uuid7_time
from .models import (
    Ack,
    ArmInfo,
    ArmSpec,
    ArmStats,
    Decision,
    ExperimentInfo,
    ExperimentUpdate,
    FeedbackCounts,
    Observation,
    Reward,
    Stats,
)

__all__ = [
    "DEFAULT_TARGET",
    "Ack",
    "AlreadyExists",
    "ArmInfo",
    "ArmSpec",
    "ArmStats",
    "AsyncClient",
    "BanditdError",
    "Client",
    "DeadlineExceeded",
    "Decision",
    "ExperimentInfo",
    "ExperimentUpdate",
    "FailedPrecondition",
    "FeedbackCounts",
    "InvalidArgument",
    "NotFound",
    "Observation",
    "Reward",
    "Stats",
    "Unavailable",
    "Unimplemented",
    "new_event_id",
    "uuid7",
    "uuid7_time",
]
