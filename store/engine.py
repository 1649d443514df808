"""Engines for the event log: SQLite (embedded default) and PostgreSQL through psycopg 3.

SQLite connections get WAL (readers never block the writer), ``synchronous=FULL`` (a committed
transaction survives power loss: acknowledged = committed), a busy timeout and foreign keys, on
every new connection. Python's sqlite3 module is told not to manage transactions so the store
can open write transactions with ``BEGIN IMMEDIATE``: taking the write lock up front means a
read-then-write transaction (first-reward-wins, the apply chain check) can neither deadlock nor
be invalidated by another writer between its read and its write.
"""

from __future__ import annotations

import pathlib
import time
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine

SUPPORTED_DIALECTS = ("sqlite", "postgresql")
BUSY_TIMEOUT_MS = 10_000
# A pooled PostgreSQL connection idle for longer than this is pinged before use. Pinging every
# checkout (pool_pre_ping) cost a round trip per transaction: ~20% of a replica's decision
# writer time under load (py-spy). A connection in steady use proves itself alive by use.
PING_IDLE_S = 1.0
PG_CONNECT_TIMEOUT_S = 5

# Execution option read by the "begin" listener: "IMMEDIATE" for write transactions.
SQLITE_BEGIN = "sqlite_begin"
# Engine option marking a SQLite engine set up here (the event log refuses any other).
SQLITE_READY = "banditd_sqlite_ready"


def default_sqlite_url(data_dir: str | pathlib.Path) -> str:
    """The embedded default: ``sqlite:///<data_dir>/banditd.db``."""
    return f"sqlite:///{pathlib.Path(data_dir) / 'banditd.db'}"


def make_engine(url: str | sa.URL, *, busy_timeout_ms: int = BUSY_TIMEOUT_MS, **kw: Any) -> Engine:
    """An engine for ``url`` set up for the event log; ``kw`` goes to ``sqlalchemy.create_engine``.

    A plain ``postgresql://`` URL is taken to mean psycopg 3 (the only driver installed). For a
    SQLite file the parent directory is created.
    """
    u = sa.make_url(url)
    if u.get_backend_name() not in SUPPORTED_DIALECTS:
        raise ValueError(
            f"database_url: unsupported database {u.get_backend_name()!r} "
            f"(use sqlite:///path or postgresql+psycopg://...)"
        )
    if u.drivername == "postgresql":
        u = u.set(drivername="postgresql+psycopg")
    if u.get_backend_name() == "sqlite":
        if not u.database or u.database == ":memory:" or "mode=memory" in str(u):
            # Every pooled connection would open its own empty database.
            raise ValueError("database_url: in-memory SQLite is not supported; give a file path")
        if not u.database.startswith("file:"):
            pathlib.Path(u.database).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(u, **kw)
        _sqlite_setup(engine, busy_timeout_ms)
        engine.update_execution_options(**{SQLITE_READY: True})
        return engine
    # Without it an unreachable (not refusing) server hangs a commit for the OS's TCP timeout;
    # with it the caller gets Unavailable. A connect_timeout in the URL wins.
    if "connect_timeout" not in u.query:
        kw.setdefault("connect_args", {}).setdefault("connect_timeout", PG_CONNECT_TIMEOUT_S)
    engine = sa.create_engine(u, **kw)
    _ping_when_idle(engine)
    return engine


def _ping_when_idle(engine: Engine) -> None:
    """A restarted PostgreSQL leaves dead sockets in the pool: ping those idle for PING_IDLE_S
    before handing them out, and have the pool replace any that fails."""

    @event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_conn: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        since = record.info.pop("idle_since", None)
        if since is None or time.monotonic() - since < PING_IDLE_S:
            return
        try:
            engine.dialect.do_ping(dbapi_conn)
        except Exception as e:
            # The pool discards this connection and checks out another (up to 3 tries).
            raise sa.exc.DisconnectionError(f"idle connection failed its ping: {e}") from e


def _sqlite_setup(engine: Engine, busy_timeout_ms: int) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we emit BEGIN ourselves (see module docstring)
        cur = dbapi_conn.cursor()
        try:
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
            cur.execute("PRAGMA foreign_keys=ON")
        finally:
            cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        mode = conn.get_execution_options().get(SQLITE_BEGIN, "DEFERRED")
        if mode not in ("DEFERRED", "IMMEDIATE"):
            raise ValueError(f"{SQLITE_BEGIN}: expected DEFERRED or IMMEDIATE, got {mode!r}")
        conn.exec_driver_sql(f"BEGIN {mode}")
