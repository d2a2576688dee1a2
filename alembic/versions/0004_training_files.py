"""training files and erasure requests

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28 14:45:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "training_files",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("data_source_id", sa.String(length=64), nullable=False),
        sa.Column("purpose", sa.String(length=32), nullable=False),
        sa.Column("filename", sa.String(length=255), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("status_details", sa.Text(), nullable=True),
        sa.Column("pii_action", sa.String(length=8), nullable=False),
        sa.Column("report", sa.JSON(), nullable=False),
        sa.Column("content_sha256", sa.String(length=64), nullable=True),
        sa.Column("content_bytes", sa.BigInteger(), nullable=True),
        sa.Column("examples", sa.Integer(), nullable=False),
        sa.Column("redaction", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        sa.Column("content_deleted_at", sa.String(length=32), nullable=True),
        sa.Column("content_deleted_by", sa.String(length=128), nullable=True),
        sa.Column("erasure_request_id", sa.String(length=40), nullable=True),
        sa.ForeignKeyConstraint(["data_source_id"], ["data_sources.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("training_files", schema=None) as batch_op:
        batch_op.create_index(
            "ix_training_files_tenant_created", ["tenant", "created_at"], unique=False
        )
        batch_op.create_index(
            "ix_training_files_tenant_source", ["tenant", "data_source_id"], unique=False
        )

    op.create_table(
        "erasure_requests",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("subject_sha256", sa.String(length=64), nullable=False),
        sa.Column("reference", sa.String(length=128), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("findings", sa.JSON(), nullable=False),
        sa.Column("requested_by", sa.String(length=128), nullable=False),
        sa.Column("requested_at", sa.String(length=32), nullable=False),
        sa.Column("decision", sa.String(length=16), nullable=True),
        sa.Column("decision_reason", sa.Text(), nullable=True),
        sa.Column("decided_by", sa.String(length=128), nullable=True),
        sa.Column("decided_at", sa.String(length=32), nullable=True),
        sa.Column("salt_destroyed", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("erasure_requests", schema=None) as batch_op:
        batch_op.create_index(
            "ix_erasure_requests_tenant_status", ["tenant", "status"], unique=False
        )

    op.create_table(
        "erasure_salts",
        sa.Column("request_id", sa.String(length=40), nullable=False),
        sa.Column("salt", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(["request_id"], ["erasure_requests.id"]),
        sa.PrimaryKeyConstraint("request_id"),
    )


def downgrade() -> None:
    op.drop_table("erasure_salts")
    with op.batch_alter_table("erasure_requests", schema=None) as batch_op:
        batch_op.drop_index("ix_erasure_requests_tenant_status")
    op.drop_table("erasure_requests")
    with op.batch_alter_table("training_files", schema=None) as batch_op:
        batch_op.drop_index("ix_training_files_tenant_source")
        batch_op.drop_index("ix_training_files_tenant_created")
    op.drop_table("training_files")
