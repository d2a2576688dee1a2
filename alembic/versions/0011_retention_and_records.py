"""retention enforced (legal holds, warnings sent) and the regulators' records (issue 16 §3-4)

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 21:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("data_sources") as batch:
        batch.add_column(
            sa.Column("legal_hold", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.add_column(sa.Column("legal_hold_reason", sa.Text(), nullable=True))
        batch.add_column(sa.Column("legal_hold_by", sa.String(128), nullable=True))
        batch.add_column(sa.Column("legal_hold_at", sa.String(32), nullable=True))
        batch.add_column(sa.Column("data_origin", sa.String(16), nullable=True))
        batch.add_column(sa.Column("data_subject_categories", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("data_categories", sa.JSON(), nullable=True))
    op.create_table(
        "retention_warnings",
        sa.Column("file_id", sa.String(40), sa.ForeignKey("training_files.id"), primary_key=True),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("data_source_id", sa.String(64), nullable=False),
        sa.Column("owner", sa.String(128), nullable=False),
        sa.Column("delete_after", sa.BigInteger(), nullable=False),
        sa.Column("warned_at", sa.String(32), nullable=False),
    )
    op.create_index("ix_retention_warnings_tenant_owner", "retention_warnings", ["tenant", "owner"])


def downgrade() -> None:
    op.drop_index("ix_retention_warnings_tenant_owner", table_name="retention_warnings")
    op.drop_table("retention_warnings")
    with op.batch_alter_table("data_sources") as batch:
        for name in (
            "data_categories",
            "data_subject_categories",
            "data_origin",
            "legal_hold_at",
            "legal_hold_by",
            "legal_hold_reason",
            "legal_hold",
        ):
            batch.drop_column(name)
