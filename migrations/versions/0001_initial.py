"""Initial event log: namespaces, experiments, revisions, arms, decisions, feedback, apply
records, checkpoints, fences.

Revision ID: 0001
Revises:
Create Date: 2026-11-22

Hand-written and frozen: names and predicates are literals here, not imported from
store/schema.py, so later schema edits cannot change what this revision does.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # SQLite: INTEGER PRIMARY KEY = rowid
WINNING = "kind IN ('reward', 'default')"
PENDING = "applied_version IS NULL AND kind IN ('reward', 'default', 'observation')"
APPLIED = "applied_version IS NOT NULL"
KINDS = "kind IN ('reward', 'default', 'duplicate', 'late', 'orphan', 'observation')"


def _fk_experiment() -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(["experiment_id"], ["experiments.id"])


def upgrade() -> None:
    op.create_table(
        "namespaces",
        sa.Column("id", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_namespaces"),
        sa.UniqueConstraint("name", name="uq_namespaces_name"),
    )
    op.create_table(
        "experiments",
        sa.Column("id", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("namespace_id", sa.Integer, nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("family", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("revision", sa.Integer, nullable=False),
        sa.Column("config", sa.JSON, nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Column("updated_at", sa.Double, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_experiments"),
        sa.ForeignKeyConstraint(["namespace_id"], ["namespaces.id"]),
        sa.UniqueConstraint("namespace_id", "name", name="uq_experiments_namespace_name"),
        sa.CheckConstraint("status IN ('active', 'paused')", name="ck_experiments_status"),
    )
    op.create_table(
        "revisions",
        sa.Column("experiment_id", sa.Integer, nullable=False),
        sa.Column("revision", sa.Integer, nullable=False),
        sa.Column("family", sa.Text, nullable=False),
        sa.Column("hyperparameters", sa.JSON, nullable=False),
        sa.Column("dim", sa.Integer, nullable=True),
        sa.Column("feature_schema", sa.Text, nullable=False),
        sa.Column("feature_schema_version", sa.Integer, nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.PrimaryKeyConstraint("experiment_id", "revision", name="pk_revisions"),
        _fk_experiment(),
    )
    op.create_table(
        "arms",
        sa.Column("experiment_id", sa.Integer, nullable=False),
        sa.Column("slot", sa.Integer, nullable=False),
        sa.Column("arm_id", sa.Text, nullable=False),
        sa.Column("metadata", sa.JSON, nullable=False),
        sa.Column("features", sa.LargeBinary, nullable=True),
        sa.Column("active", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Column("retired_at", sa.Double, nullable=True),
        sa.PrimaryKeyConstraint("experiment_id", "slot", name="pk_arms"),
        _fk_experiment(),
        sa.UniqueConstraint("experiment_id", "arm_id", name="uq_arms_experiment_arm_id"),
    )
    op.create_table(
        "decisions",
        sa.Column("experiment_id", sa.Integer, nullable=False),
        sa.Column("event_id", sa.Text, nullable=False),
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
        sa.PrimaryKeyConstraint("experiment_id", "event_id", name="pk_decisions"),
        _fk_experiment(),
    )
    op.create_index("ix_decisions_deadline", "decisions", ["experiment_id", "deadline"])
    op.create_table(
        "feedback",
        sa.Column("seq", SEQ, autoincrement=True, nullable=False),
        sa.Column("experiment_id", sa.Integer, nullable=False),
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
        sa.PrimaryKeyConstraint("seq", name="pk_feedback"),
        _fk_experiment(),
        sa.CheckConstraint(KINDS, name="ck_feedback_kind"),
        sqlite_autoincrement=True,
    )
    op.create_index(
        "uq_feedback_winner",
        "feedback",
        ["experiment_id", "event_id"],
        unique=True,
        sqlite_where=sa.text(WINNING),
        postgresql_where=sa.text(WINNING),
    )
    op.create_index(
        "ix_feedback_pending",
        "feedback",
        ["experiment_id", "seq"],
        sqlite_where=sa.text(PENDING),
        postgresql_where=sa.text(PENDING),
    )
    op.create_index(
        "ix_feedback_applied",
        "feedback",
        ["experiment_id", "applied_version"],
        sqlite_where=sa.text(APPLIED),
        postgresql_where=sa.text(APPLIED),
    )
    op.create_index("ix_feedback_kind", "feedback", ["experiment_id", "kind"])
    op.create_table(
        "apply_records",
        sa.Column("experiment_id", sa.Integer, nullable=False),
        sa.Column("version_to", sa.BigInteger, nullable=False),
        sa.Column("version_from", sa.BigInteger, nullable=False),
        sa.Column("fence", sa.BigInteger, nullable=False),
        sa.Column("n_rows", sa.Integer, nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.PrimaryKeyConstraint("experiment_id", "version_to", name="pk_apply_records"),
        _fk_experiment(),
        sa.UniqueConstraint("experiment_id", "version_from", name="uq_apply_records_from"),
        sa.CheckConstraint("version_to > version_from", name="ck_apply_records_forward"),
    )
    op.create_table(
        "checkpoints",
        sa.Column("experiment_id", sa.Integer, nullable=False),
        sa.Column("revision", sa.Integer, nullable=False),
        sa.Column("version", sa.BigInteger, nullable=False),
        sa.Column("fence", sa.BigInteger, nullable=False),
        sa.Column("blob", sa.LargeBinary, nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.PrimaryKeyConstraint("experiment_id", "revision", "version", name="pk_checkpoints"),
        _fk_experiment(),
    )
    op.create_table(
        "fences",
        sa.Column("experiment_id", sa.Integer, nullable=False),
        sa.Column("fence", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.Double, nullable=False),
        sa.PrimaryKeyConstraint("experiment_id", name="pk_fences"),
        _fk_experiment(),
    )


def downgrade() -> None:
    for table in (
        "fences",
        "checkpoints",
        "apply_records",
        "feedback",
        "decisions",
        "arms",
        "revisions",
        "experiments",
        "namespaces",
    ):
        op.drop_table(table)  # drops the table's indexes with it
