"""Server configuration: defaults, overridden by ``BANDITD_*`` environment variables, then flags."""

from __future__ import annotations

import os
import pathlib
from dataclasses import dataclass, fields, replace
from typing import Any

ENV_PREFIX = "BANDITD_"


def _default_data_dir() -> str:
    base = os.environ.get("XDG_DATA_HOME") or str(pathlib.Path.home() / ".local" / "share")
    return str(pathlib.Path(base) / "banditd")


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 50051
    # Embedded default: SQLite event log and in-process state under data_dir.
    data_dir: str = ""
    database_url: str = ""  # default sqlite:///<data_dir>/banditd.db
    # Production mode: hot state, learner leases and the feedback signal in Redis; replicas
    # sharing one Redis and one PostgreSQL (database_url) serve the same experiments.
    redis_url: str = ""
    redis_prefix: str = "banditd"  # key prefix: several deployments can share one Redis
    lease_ttl_s: float = 5.0  # a learner that stops renewing is replaced after this long
    max_items: int = 1000  # Select items / Update rewards per request; more is INVALID_ARGUMENT
    # Feedback writer: max wait before a group commit. Update waits for its commit, so short.
    writer_flush_ms: float = 2.0
    # Decision writer: Select answers before its decision is committed, so a longer wait costs
    # no latency and makes fewer, larger commits (an Update for a queued decision flushes it).
    decision_flush_ms: float = 10.0
    # Decisions held while the database is unavailable (Select goes on answering from the last
    # state and its decisions are written when the database returns); past this many, Select
    # answers UNAVAILABLE rather than make decisions that are not logged.
    decision_buffer: int = 100_000
    learner_batch: int = 4096  # feedback rows per learner apply
    # Least time between two learner passes over one experiment: rewards that arrive meanwhile
    # share one apply (one state version, one commit, one propensity table) instead of costing
    # one each. Adds at most this much to the time until a Select sees a reward.
    learner_linger_ms: float = 10.0
    checkpoint_every: int = 50  # applied batches between checkpoints
    workers: int = 8  # gRPC thread pool
    # Compile every experiment's larger batch buckets in a background thread after startup and
    # creation, so a fresh server's learner does not spend its first seconds compiling.
    precompile: bool = True
    log_level: str = "INFO"

    def resolved(self) -> ServerConfig:
        data_dir = self.data_dir or _default_data_dir()
        url = self.database_url or f"sqlite:///{pathlib.Path(data_dir) / 'banditd.db'}"
        return replace(self, data_dir=data_dir, database_url=url)

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: Any) -> ServerConfig:
        """Defaults <- BANDITD_<FIELD> environment variables <- explicit (non-None) overrides."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(ENV_PREFIX + f.name.upper())
            if raw is None:
                continue
            typ = type(getattr(cls, f.name))
            if typ is bool:
                if raw.lower() not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                    raise ValueError(
                        f"{ENV_PREFIX}{f.name.upper()}: expected a boolean, got {raw!r}"
                    )
                values[f.name] = raw.lower() in ("1", "true", "yes", "on")
                continue
            try:
                values[f.name] = typ(raw)
            except ValueError as e:
                raise ValueError(
                    f"{ENV_PREFIX}{f.name.upper()}: expected {typ.__name__}, got {raw!r}"
                ) from e
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values).resolved()


def redacted(url: str) -> str:
    """``url`` with its password hidden, for logs and output."""
    if url.startswith(("redis", "rediss", "unix")):
        from banditd.store.redis_client import redact_url

        return redact_url(url)  # SQLAlchemy cannot parse a cluster URL's host list
    try:
        from sqlalchemy.engine import make_url

        return str(make_url(url).render_as_string(hide_password=True))
    except Exception:  # not a URL SQLAlchemy can parse: nothing to hide that it could find
        return url
