"""metric seqs: each job's points numbered in the order they were stored, for exact following

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-10
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Points stored before this revision have no write order: numbered by (step, name) per job, the
# order a step-by-step reader read them in. UPDATE ... FROM: PostgreSQL, and SQLite from 3.33.
NUMBER_STORED_POINTS = """
UPDATE symopt_metric_points SET seq = numbered.seq
FROM (
    SELECT job_id, name, step, row_number() OVER (PARTITION BY job_id ORDER BY step, name) AS seq
    FROM symopt_metric_points
) AS numbered
WHERE symopt_metric_points.job_id = numbered.job_id
    AND symopt_metric_points.name = numbered.name
    AND symopt_metric_points.step = numbered.step
"""
COUNT_STORED_POINTS = """
UPDATE symopt_jobs SET metrics_seq = (
    SELECT coalesce(max(seq), 0) FROM symopt_metric_points WHERE symopt_metric_points.job_id = symopt_jobs.id
)
"""


def upgrade() -> None:
    # Added in place (no copy of the jobs table on SQLite: a copy would drop the parent table of
    # rows that cascade).
    op.add_column(
        "symopt_jobs", sa.Column("metrics_seq", sa.BigInteger(), server_default="0", nullable=False)
    )
    op.add_column("symopt_metric_points", sa.Column("seq", sa.BigInteger(), nullable=True))
    op.execute(NUMBER_STORED_POINTS)
    op.execute(COUNT_STORED_POINTS)
    with op.batch_alter_table("symopt_metric_points") as batch:
        batch.alter_column("seq", existing_type=sa.BigInteger(), nullable=False)
        batch.create_index("ix_symopt_metric_points_job_seq", ["job_id", "seq"], unique=True)


def downgrade() -> None:
    op.drop_index("ix_symopt_metric_points_job_seq", table_name="symopt_metric_points")
    # Native DROP COLUMN (SQLite from 3.35): neither table is copied.
    op.drop_column("symopt_metric_points", "seq")
    op.drop_column("symopt_jobs", "metrics_seq")
