"""initial store: tenants, api keys, jobs, metric points, job events, sweeps

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# JSON columns are JSONB on PostgreSQL.
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "symopt_tenants",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_symopt_tenants")),
        sa.UniqueConstraint("name", name=op.f("uq_symopt_tenants_name")),
    )
    op.create_table(
        "symopt_api_keys",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("secret_hash", sa.String(length=64), nullable=False),
        sa.Column("is_admin", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["symopt_tenants.id"],
            name=op.f("fk_symopt_api_keys_tenant_id_symopt_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_symopt_api_keys")),
    )
    with op.batch_alter_table("symopt_api_keys", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_symopt_api_keys_tenant_id"), ["tenant_id"], unique=False)

    op.create_table(
        "symopt_sweeps",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("spec", JSON, nullable=False),
        sa.Column("study_name", sa.String(length=100), nullable=False),
        sa.Column("n_trials", sa.Integer(), nullable=False),
        sa.Column("best_job_id", sa.String(length=32), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["symopt_tenants.id"],
            name=op.f("fk_symopt_sweeps_tenant_id_symopt_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_symopt_sweeps")),
        sa.UniqueConstraint("study_name", name=op.f("uq_symopt_sweeps_study_name")),
    )
    with op.batch_alter_table("symopt_sweeps", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_symopt_sweeps_status"), ["status"], unique=False)
        batch_op.create_index("ix_symopt_sweeps_tenant_created", ["tenant_id", "created_at"], unique=False)

    op.create_table(
        "symopt_jobs",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("spec", JSON, nullable=False),
        sa.Column("gpus", sa.Integer(), nullable=False),
        sa.Column("cpus", sa.Integer(), nullable=False),
        sa.Column("sweep_id", sa.String(length=32), nullable=True),
        sa.Column("trial_number", sa.Integer(), nullable=True),
        sa.Column("idempotency_key", sa.String(length=200), nullable=True),
        sa.Column("queued_reason", sa.Text(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("result", JSON, nullable=True),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("best_val_loss", sa.Float(), nullable=True),
        sa.Column("diverged_at", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["sweep_id"],
            ["symopt_sweeps.id"],
            name=op.f("fk_symopt_jobs_sweep_id_symopt_sweeps"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["symopt_tenants.id"],
            name=op.f("fk_symopt_jobs_tenant_id_symopt_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_symopt_jobs")),
        sa.UniqueConstraint("tenant_id", "idempotency_key", name="uq_symopt_jobs_tenant_idempotency"),
    )
    with op.batch_alter_table("symopt_jobs", schema=None) as batch_op:
        batch_op.create_index("ix_symopt_jobs_status_created", ["status", "created_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_symopt_jobs_sweep_id"), ["sweep_id"], unique=False)
        batch_op.create_index("ix_symopt_jobs_tenant_created", ["tenant_id", "created_at"], unique=False)
        batch_op.create_index("ix_symopt_jobs_tenant_status", ["tenant_id", "status"], unique=False)

    op.create_table(
        "symopt_job_events",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("job_id", sa.String(length=32), nullable=False),
        sa.Column("time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("step", sa.Integer(), nullable=True),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("data", JSON, nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["symopt_jobs.id"],
            name=op.f("fk_symopt_job_events_job_id_symopt_jobs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_symopt_job_events")),
    )
    with op.batch_alter_table("symopt_job_events", schema=None) as batch_op:
        batch_op.create_index("ix_symopt_job_events_job_id_id", ["job_id", "id"], unique=False)

    op.create_table(
        "symopt_metric_points",
        sa.Column("job_id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("kind", sa.String(length=4), nullable=False),
        sa.Column("wall_time", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["symopt_jobs.id"],
            name=op.f("fk_symopt_metric_points_job_id_symopt_jobs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("job_id", "name", "step", name=op.f("pk_symopt_metric_points")),
    )
    with op.batch_alter_table("symopt_metric_points", schema=None) as batch_op:
        batch_op.create_index("ix_symopt_metric_points_job_step", ["job_id", "step"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("symopt_metric_points", schema=None) as batch_op:
        batch_op.drop_index("ix_symopt_metric_points_job_step")

    op.drop_table("symopt_metric_points")
    with op.batch_alter_table("symopt_job_events", schema=None) as batch_op:
        batch_op.drop_index("ix_symopt_job_events_job_id_id")

    op.drop_table("symopt_job_events")
    with op.batch_alter_table("symopt_jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_symopt_jobs_tenant_status")
        batch_op.drop_index("ix_symopt_jobs_tenant_created")
        batch_op.drop_index(batch_op.f("ix_symopt_jobs_sweep_id"))
        batch_op.drop_index("ix_symopt_jobs_status_created")

    op.drop_table("symopt_jobs")
    with op.batch_alter_table("symopt_sweeps", schema=None) as batch_op:
        batch_op.drop_index("ix_symopt_sweeps_tenant_created")
        batch_op.drop_index(batch_op.f("ix_symopt_sweeps_status"))

    op.drop_table("symopt_sweeps")
    with op.batch_alter_table("symopt_api_keys", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_symopt_api_keys_tenant_id"))

    op.drop_table("symopt_api_keys")
    op.drop_table("symopt_tenants")
