"""Alembic environment for the event log (SQLite and PostgreSQL).

Run through ``banditd.store.migrate`` (which hands over a connection) or the ``alembic`` command
with ``sqlalchemy.url`` set. No ``alembic.ini`` is needed: the script location is this package.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context
from banditd.store.engine import make_engine
from banditd.store.schema import metadata

# Any constant works; it only has to be the same for every replica running `banditd migrate`.
PG_MIGRATION_LOCK = 0x62616E64  # "band"


def _run(connection: sa.Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        # SQLite cannot ALTER most things in place; batch mode copies the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            # Replicas started together migrate one at a time; the others then find the
            # schema current. Released at commit.
            connection.execute(
                sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": PG_MIGRATION_LOCK}
            )
        context.run_migrations()


def run_online() -> None:
    given = context.config.attributes.get("connection")
    if given is not None:
        _run(given)
        return
    engine = make_engine(context.config.get_main_option("sqlalchemy.url") or "")
    try:
        with engine.begin() as connection:
            _run(connection)
    finally:
        engine.dispose()


def run_offline() -> None:
    context.configure(
        url=context.config.get_main_option("sqlalchemy.url"),
        target_metadata=metadata,
        literal_binds=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
