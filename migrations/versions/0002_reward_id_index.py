"""Index feedback by (experiment, reward id): a retried Update finds its first ack.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

HAS_ID = "reward_id IS NOT NULL"


def upgrade() -> None:
    op.create_index(
        "ix_feedback_reward_id",
        "feedback",
        ["experiment_id", "reward_id"],
        sqlite_where=sa.text(HAS_ID),
        postgresql_where=sa.text(HAS_ID),
    )


def downgrade() -> None:
    op.drop_index("ix_feedback_reward_id", table_name="feedback")
