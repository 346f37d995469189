"""comparison studies: the studies table, and the links of their sweeps and confirmation runs

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "symopt_studies",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("stage", sa.String(length=20), nullable=False),
        sa.Column("spec", JSON, nullable=False),
        sa.Column("result", JSON, nullable=True),
        sa.Column("idempotency_key", sa.String(length=200), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("owner", sa.String(length=64), nullable=True),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["symopt_tenants.id"],
            name=op.f("fk_symopt_studies_tenant_id_symopt_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_symopt_studies")),
        sa.UniqueConstraint("tenant_id", "idempotency_key", name="uq_symopt_studies_tenant_idempotency"),
    )
    with op.batch_alter_table("symopt_studies", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_symopt_studies_status"), ["status"], unique=False)
        batch_op.create_index("ix_symopt_studies_tenant_created", ["tenant_id", "created_at"], unique=False)
    with op.batch_alter_table("symopt_sweeps", schema=None) as batch_op:
        batch_op.add_column(sa.Column("study_id", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("study_candidate", sa.String(length=64), nullable=True))
        batch_op.create_index(batch_op.f("ix_symopt_sweeps_study_id"), ["study_id"], unique=False)
        batch_op.create_unique_constraint("uq_symopt_sweeps_study_candidate", ["study_id", "study_candidate"])
        batch_op.create_foreign_key(
            batch_op.f("fk_symopt_sweeps_study_id_symopt_studies"),
            "symopt_studies",
            ["study_id"],
            ["id"],
            ondelete="CASCADE",
        )
    with op.batch_alter_table("symopt_jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("study_id", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("study_candidate", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("study_seed", sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f("ix_symopt_jobs_study_id"), ["study_id"], unique=False)
        batch_op.create_unique_constraint(
            "uq_symopt_jobs_study_run", ["study_id", "study_candidate", "study_seed"]
        )
        batch_op.create_foreign_key(
            batch_op.f("fk_symopt_jobs_study_id_symopt_studies"),
            "symopt_studies",
            ["study_id"],
            ["id"],
            ondelete="CASCADE",
        )


def downgrade() -> None:
    with op.batch_alter_table("symopt_jobs", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("fk_symopt_jobs_study_id_symopt_studies"), type_="foreignkey")
        batch_op.drop_constraint("uq_symopt_jobs_study_run", type_="unique")
        batch_op.drop_index(batch_op.f("ix_symopt_jobs_study_id"))
        batch_op.drop_column("study_seed")
        batch_op.drop_column("study_candidate")
        batch_op.drop_column("study_id")
    with op.batch_alter_table("symopt_sweeps", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("fk_symopt_sweeps_study_id_symopt_studies"), type_="foreignkey")
        batch_op.drop_constraint("uq_symopt_sweeps_study_candidate", type_="unique")
        batch_op.drop_index(batch_op.f("ix_symopt_sweeps_study_id"))
        batch_op.drop_column("study_candidate")
        batch_op.drop_column("study_id")
    with op.batch_alter_table("symopt_studies", schema=None) as batch_op:
        batch_op.drop_index("ix_symopt_studies_tenant_created")
        batch_op.drop_index(batch_op.f("ix_symopt_studies_status"))
    op.drop_table("symopt_studies")
