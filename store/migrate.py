"""Schema migrations, programmatically: the only way the service creates or changes tables.

The Alembic environment ships inside the package (``banditd.migrations``), so no ``alembic.ini``
is needed on disk. Each call runs in one transaction: on SQLite and PostgreSQL alike a failed
migration leaves the schema as it was.
"""

from __future__ import annotations

import importlib.resources
from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Engine

from .engine import make_engine

Target = str | sa.URL | Engine


def script_location() -> str:
    """The directory holding ``env.py`` and ``versions/`` of the installed package."""
    return str(importlib.resources.files("banditd.migrations"))


def _config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", script_location())
    return cfg


@contextmanager
def _engine(target: Target) -> Iterator[Engine]:
    if isinstance(target, Engine):
        yield target
        return
    engine = make_engine(target)
    try:
        yield engine
    finally:
        engine.dispose()


def upgrade(target: Target, revision: str = "head") -> None:
    """Migrate the database at ``target`` (URL or engine) up to ``revision``."""
    _run(target, "upgrade", revision)


def downgrade(target: Target, revision: str) -> None:
    """Migrate down to ``revision`` (``"base"`` drops every table)."""
    _run(target, "downgrade", revision)


def _run(target: Target, direction: str, revision: str) -> None:
    cfg = _config()
    with _engine(target) as engine, engine.begin() as conn:
        cfg.attributes["connection"] = conn
        getattr(command, direction)(cfg, revision)


def current(target: Target) -> str | None:
    """The database's revision; None for an empty (never migrated) database."""
    with _engine(target) as engine, engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head() -> str:
    """The newest revision this package ships."""
    found = ScriptDirectory.from_config(_config()).get_current_head()
    assert found is not None, "banditd.migrations has no revisions"
    return found


def is_current(target: Target) -> bool:
    """Whether the database is at ``head()``: a server should refuse an outdated schema."""
    return current(target) == head()
