"""users' own data and models: the datasets and uploaded models tables

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _owned_columns(table: str) -> list[sa.SchemaItem]:
    return [
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("tenant_id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["symopt_tenants.id"],
            name=op.f(f"fk_{table}_tenant_id_symopt_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f(f"pk_{table}")),
    ]


def upgrade() -> None:
    op.create_table(
        "symopt_datasets",
        *_owned_columns("symopt_datasets"),
        sa.Column("format", sa.String(length=20), nullable=False),
        sa.Column("text_field", sa.String(length=100), nullable=True),
        sa.Column("text_sha256", sa.String(length=64), nullable=False),
        sa.Column("documents", sa.BigInteger(), nullable=False),
        sa.Column("characters", sa.BigInteger(), nullable=False),
        sa.Column("text_bytes", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_symopt_datasets_tenant_created", "symopt_datasets", ["tenant_id", "created_at"])
    op.create_table(
        "symopt_models",
        *_owned_columns("symopt_models"),
        sa.Column("model_type", sa.String(length=100), nullable=False),
        sa.Column("architectures", JSON, nullable=False),
        sa.Column("files", JSON, nullable=False),
        sa.Column("has_tokenizer", sa.Boolean(), nullable=False),
    )
    op.create_index("ix_symopt_models_tenant_created", "symopt_models", ["tenant_id", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_symopt_models_tenant_created", table_name="symopt_models")
    op.drop_table("symopt_models")
    op.drop_index("ix_symopt_datasets_tenant_created", table_name="symopt_datasets")
    op.drop_table("symopt_datasets")
