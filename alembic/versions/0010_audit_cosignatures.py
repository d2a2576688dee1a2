"""witness cosignatures of audit checkpoints (C2SP tlog-cosignature)

Revision ID: 0010
Revises: 0008
Create Date: 2026-12-07 20:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "audit_cosignatures",
        sa.Column("id", sa.Integer(), primary_key=True, nullable=False),
        sa.Column("tree_size", sa.BigInteger(), nullable=False),
        sa.Column("root_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("witness", sa.String(256), nullable=False),
        sa.Column("key_id", sa.String(8), nullable=False),
        sa.Column("timestamp", sa.BigInteger(), nullable=False),
        sa.Column("line", sa.Text(), nullable=False),
        sa.UniqueConstraint("tree_size", "witness", "key_id", name="uq_audit_cosignatures_witness"),
    )
    op.create_index("ix_audit_cosignatures_tree_size", "audit_cosignatures", ["tree_size"])


def downgrade() -> None:
    op.drop_index("ix_audit_cosignatures_tree_size", table_name="audit_cosignatures")
    op.drop_table("audit_cosignatures")
