"""sweep controller: one job per trial, sweep ownership

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("symopt_jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("trial_study", sa.String(length=140), nullable=True))
        batch_op.add_column(sa.Column("pruned_at", sa.BigInteger(), nullable=True))
        batch_op.create_unique_constraint(
            "uq_symopt_jobs_sweep_trial", ["sweep_id", "trial_study", "trial_number"]
        )
    with op.batch_alter_table("symopt_sweeps", schema=None) as batch_op:
        batch_op.add_column(sa.Column("owner", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("resolved_space", JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("symopt_sweeps", schema=None) as batch_op:
        batch_op.drop_column("resolved_space")
        batch_op.drop_column("heartbeat_at")
        batch_op.drop_column("owner")
    with op.batch_alter_table("symopt_jobs", schema=None) as batch_op:
        batch_op.drop_constraint("uq_symopt_jobs_sweep_trial", type_="unique")
        batch_op.drop_column("pruned_at")
        batch_op.drop_column("trial_study")
