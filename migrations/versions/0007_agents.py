"""agents: trials that users' own training scripts claim and hold under a lease

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("symopt_jobs") as batch:
        batch.add_column(
            sa.Column("executor", sa.String(length=16), server_default="service", nullable=False)
        )
        batch.add_column(sa.Column("lease_token_hash", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("lease_seconds", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("agent_host", sa.String(length=200), nullable=True))
        batch.add_column(sa.Column("checkpoint_step", sa.Integer(), nullable=True))
        batch.create_index("ix_symopt_jobs_executor_status", ["executor", "status"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("symopt_jobs") as batch:
        batch.drop_index("ix_symopt_jobs_executor_status")
        for column in (
            "checkpoint_step",
            "agent_host",
            "lease_seconds",
            "lease_expires_at",
            "lease_token_hash",
            "executor",
        ):
            batch.drop_column(column)
