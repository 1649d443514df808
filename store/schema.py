"""The event log's tables (SQLAlchemy Core). The database gets them only through Alembic
(``migrations/versions``); a test checks the migrations produce exactly this metadata.

Times are float epoch seconds (server clock) so SQLite and PostgreSQL compare them the same way.
Vectors are packed little-endian bytes (``packing``); per-slot lists too, with the first slot
copied into a scalar column (``arm_slot``, ``propensity``, ``reward``) so per-arm statistics can
be computed in SQL without unpacking.
"""

from __future__ import annotations

import sqlalchemy as sa

from .rows import APPLIED_KINDS, FEEDBACK_KINDS, WINNING_KINDS


def _in(column: str, values: tuple[str, ...]) -> str:
    # Literal SQL shared by CHECK constraints, partial indexes and the queries that must repeat
    # a partial index's predicate verbatim for SQLite's planner to use it.
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


WINNING_PREDICATE = _in("kind", WINNING_KINDS)
PENDING_PREDICATE = f"applied_version IS NULL AND {_in('kind', APPLIED_KINDS)}"

SeqType = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # INTEGER PRIMARY KEY = rowid

# Primary keys are named too, so errors (and the migration, which repeats every name) agree.
metadata = sa.MetaData(naming_convention={"pk": "pk_%(table_name)s"})

namespaces = sa.Table(
    "namespaces",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.UniqueConstraint("name", name="uq_namespaces_name"),
)

experiments = sa.Table(
    "experiments",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("namespace_id", sa.Integer, sa.ForeignKey("namespaces.id"), nullable=False),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("family", sa.Text, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("revision", sa.Integer, nullable=False),
    sa.Column("config", sa.JSON, nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("updated_at", sa.Double, nullable=False),
    sa.UniqueConstraint("namespace_id", "name", name="uq_experiments_namespace_name"),
    sa.CheckConstraint("status IN ('active', 'paused')", name="ck_experiments_status"),
)

revisions = sa.Table(
    "revisions",
    metadata,
    sa.Column("experiment_id", sa.Integer, sa.ForeignKey("experiments.id"), primary_key=True),
    sa.Column("revision", sa.Integer, primary_key=True),
    sa.Column("family", sa.Text, nullable=False),
    sa.Column("hyperparameters", sa.JSON, nullable=False),
    sa.Column("dim", sa.Integer, nullable=True),
    sa.Column("feature_schema", sa.Text, nullable=False),
    sa.Column("feature_schema_version", sa.Integer, nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
)

arms = sa.Table(
    "arms",
    metadata,
    sa.Column("experiment_id", sa.Integer, sa.ForeignKey("experiments.id"), primary_key=True),
    sa.Column("slot", sa.Integer, primary_key=True),
    sa.Column("arm_id", sa.Text, nullable=False),
    sa.Column("metadata", sa.JSON, nullable=False),
    sa.Column("features", sa.LargeBinary, nullable=True),
    sa.Column("active", sa.Boolean, nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("retired_at", sa.Double, nullable=True),
    sa.UniqueConstraint("experiment_id", "arm_id", name="uq_arms_experiment_arm_id"),
)

decisions = sa.Table(
    "decisions",
    metadata,
    sa.Column("experiment_id", sa.Integer, sa.ForeignKey("experiments.id"), primary_key=True),
    sa.Column("event_id", sa.Text, primary_key=True),
    sa.Column("revision", sa.Integer, nullable=False),
    sa.Column("version", sa.BigInteger, nullable=False),
    sa.Column("unit_id", sa.Text, nullable=True),
    sa.Column("arm_slot", sa.Integer, nullable=False),
    sa.Column("propensity", sa.Double, nullable=False),
    sa.Column("chosen", sa.LargeBinary, nullable=False),
    sa.Column("slot_propensities", sa.LargeBinary, nullable=False),
    sa.Column("context", sa.LargeBinary, nullable=True),
    sa.Column("sparse_indices", sa.LargeBinary, nullable=True),
    sa.Column("arm_feature_slots", sa.LargeBinary, nullable=True),
    sa.Column("arm_features", sa.LargeBinary, nullable=True),
    sa.Column("eligible", sa.LargeBinary, nullable=True),
    sa.Column("holdout", sa.Boolean, nullable=False),
    sa.Column("deferred", sa.Boolean, nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("deadline", sa.Double, nullable=True),
    # The learner scans due windows in deadline order; nothing else looks decisions up by time.
    sa.Index("ix_decisions_deadline", "experiment_id", "deadline"),
)

feedback = sa.Table(
    "feedback",
    metadata,
    sa.Column("seq", SeqType, primary_key=True, autoincrement=True),
    sa.Column("experiment_id", sa.Integer, sa.ForeignKey("experiments.id"), nullable=False),
    # No foreign key to decisions: orphan and late rows may name decisions that are gone.
    sa.Column("event_id", sa.Text, nullable=True),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("reward", sa.Double, nullable=False),
    sa.Column("slot_rewards", sa.LargeBinary, nullable=True),
    sa.Column("metrics", sa.JSON(none_as_null=True), nullable=True),
    sa.Column("reward_id", sa.Text, nullable=True),
    sa.Column("client_seq", sa.BigInteger, nullable=True),
    sa.Column("arm_slot", sa.Integer, nullable=True),
    sa.Column("chosen", sa.LargeBinary, nullable=True),
    sa.Column("propensity", sa.Double, nullable=True),
    sa.Column("context", sa.LargeBinary, nullable=True),
    sa.Column("sparse_indices", sa.LargeBinary, nullable=True),
    sa.Column("arm_feature_slots", sa.LargeBinary, nullable=True),
    sa.Column("arm_features", sa.LargeBinary, nullable=True),
    sa.Column("event_time", sa.Double, nullable=True),
    sa.Column("committed_at", sa.Double, nullable=False),
    sa.Column("applied_version", sa.BigInteger, nullable=True),
    sa.CheckConstraint(_in("kind", FEEDBACK_KINDS), name="ck_feedback_kind"),
    # First reward wins: a reward and a default are the same kind of row for this index, so at
    # most one of them exists per event id whatever the interleaving of writers.
    sa.Index(
        "uq_feedback_winner",
        "experiment_id",
        "event_id",
        unique=True,
        sqlite_where=sa.text(WINNING_PREDICATE),
        postgresql_where=sa.text(WINNING_PREDICATE),
    ),
    # The learner's queue: stays as small as the backlog because applied rows leave it.
    sa.Index(
        "ix_feedback_pending",
        "experiment_id",
        "seq",
        sqlite_where=sa.text(PENDING_PREDICATE),
        postgresql_where=sa.text(PENDING_PREDICATE),
    ),
    # Recovery replays the batches after a checkpoint by version.
    sa.Index(
        "ix_feedback_applied",
        "experiment_id",
        "applied_version",
        sqlite_where=sa.text("applied_version IS NOT NULL"),
        postgresql_where=sa.text("applied_version IS NOT NULL"),
    ),
    sa.Index("ix_feedback_kind", "experiment_id", "kind"),
    # A retried Update (same reward id) gets its first ack back instead of a duplicate.
    sa.Index(
        "ix_feedback_reward_id",
        "experiment_id",
        "reward_id",
        sqlite_where=sa.text("reward_id IS NOT NULL"),
        postgresql_where=sa.text("reward_id IS NOT NULL"),
    ),
    sqlite_autoincrement=True,  # seq never reused, even after the highest row is deleted
)

apply_records = sa.Table(
    "apply_records",
    metadata,
    sa.Column("experiment_id", sa.Integer, sa.ForeignKey("experiments.id"), primary_key=True),
    sa.Column("version_to", sa.BigInteger, primary_key=True),
    sa.Column("version_from", sa.BigInteger, nullable=False),
    sa.Column("fence", sa.BigInteger, nullable=False),
    sa.Column("n_rows", sa.Integer, nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
    # Unique at both ends: two learners starting from the same version collide here even when
    # they would end at different versions.
    sa.UniqueConstraint("experiment_id", "version_from", name="uq_apply_records_from"),
    sa.CheckConstraint("version_to > version_from", name="ck_apply_records_forward"),
)

checkpoints = sa.Table(
    "checkpoints",
    metadata,
    sa.Column("experiment_id", sa.Integer, sa.ForeignKey("experiments.id"), primary_key=True),
    sa.Column("revision", sa.Integer, primary_key=True),
    sa.Column("version", sa.BigInteger, primary_key=True),
    sa.Column("fence", sa.BigInteger, nullable=False),
    sa.Column("blob", sa.LargeBinary, nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
)

# The fencing token per experiment: incremented on every learner takeover, checked (under a row
# lock) by every apply and checkpoint. Lease holder and expiry live with the lease (Redis).
fences = sa.Table(
    "fences",
    metadata,
    sa.Column("experiment_id", sa.Integer, sa.ForeignKey("experiments.id"), primary_key=True),
    sa.Column("fence", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.Double, nullable=False),
)
