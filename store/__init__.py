"""Persistence behind small interfaces (DESIGN §5), one module per backend:

* ``eventlog.EventLog`` — the durable log; ``sql.SqlEventLog`` on SQLite or PostgreSQL, schema
  only through ``migrate`` (Alembic, ``banditd.migrations``).
* ``state.StateStore`` — hot policy state per experiment; ``state_memory.MemoryStateStore``
  (embedded) and ``state_redis.RedisStateStore`` (production; every key of an experiment under
  one hash tag, ``state_redis.keys_for``).
* ``signal.FeedbackSignal`` — wakes the learner; ``signal_local.LocalSignal`` and
  ``signal_redis.RedisSignal`` (pub/sub across replicas).
* ``lease.RedisLease`` — one learner per experiment, with a fencing token per takeover.
* ``serialize`` — policy state <-> bytes (npz + JSON header, never pickle).

This package imports no policy code: a state is an opaque tree of arrays.
"""

from .errors import (
    AlreadyExists,
    Conflict,
    NotFound,
    StaleFence,
    StateFormatError,
    StoreError,
    Unavailable,
)
from .eventlog import EventLog
from .signal import FeedbackSignal
from .state import Snapshot, StateStore

__all__ = [
    "AlreadyExists",
    "Conflict",
    "EventLog",
    "FeedbackSignal",
    "NotFound",
    "Snapshot",
    "StaleFence",
    "StateFormatError",
    "StateStore",
    "StoreError",
    "Unavailable",
]
