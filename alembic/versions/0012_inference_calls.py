"""governed inference: usage rows, kept transcripts, model inference settings, traffic splits

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07 20:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "inference_calls",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("model_id", sa.String(length=128), nullable=False),
        sa.Column("model_version_id", sa.String(length=128), nullable=True),
        sa.Column("base_model", sa.String(length=64), nullable=True),
        sa.Column("principal", sa.String(length=128), nullable=False),
        sa.Column("purpose", sa.String(length=64), nullable=True),
        sa.Column("prompt_tokens", sa.Integer(), nullable=False),
        sa.Column("completion_tokens", sa.Integer(), nullable=False),
        sa.Column("latency_ms", sa.Float(), nullable=False),
        sa.Column("outcome", sa.String(length=64), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=False),
        sa.Column("request_sha256", sa.String(length=64), nullable=False),
        sa.Column("response_sha256", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("created_ns", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("inference_calls", schema=None) as batch_op:
        batch_op.create_index(
            "ix_inference_calls_version_created", ["model_version_id", "created_ns"]
        )
        batch_op.create_index("ix_inference_calls_model_created", ["model_id", "created_ns"])
        batch_op.create_index("ix_inference_calls_tenant_created", ["tenant", "created_ns"])

    op.create_table(
        "inference_transcripts",
        sa.Column("call_id", sa.String(length=40), nullable=False),
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("model_version_id", sa.String(length=128), nullable=False),
        sa.Column("principal", sa.String(length=128), nullable=False),
        sa.Column("prompt", sa.Text(), nullable=False),
        sa.Column("completion", sa.Text(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("call_id"),
    )
    with op.batch_alter_table("inference_transcripts", schema=None) as batch_op:
        batch_op.create_index("ix_inference_transcripts_tenant", ["tenant", "created_at"])
        batch_op.create_index("ix_inference_transcripts_expires", ["expires_at"])

    op.create_table(
        "inference_model_settings",
        sa.Column("model_id", sa.String(length=128), nullable=False),
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("keep_text", sa.Boolean(), nullable=False),
        sa.Column("retention_days", sa.Integer(), nullable=False),
        sa.Column("set_by", sa.String(length=128), nullable=False),
        sa.Column("set_at", sa.BigInteger(), nullable=False),
        sa.Column("policy_version", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("model_id"),
    )
    op.create_table(
        "inference_traffic_splits",
        sa.Column("model_id", sa.String(length=128), nullable=False),
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("candidate_id", sa.String(length=128), nullable=True),
        sa.Column("percent", sa.Float(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("set_by", sa.String(length=128), nullable=False),
        sa.Column("set_at", sa.BigInteger(), nullable=False),
        sa.Column("policy_version", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("model_id"),
    )


def downgrade() -> None:
    op.drop_table("inference_traffic_splits")
    op.drop_table("inference_model_settings")
    with op.batch_alter_table("inference_transcripts", schema=None) as batch_op:
        batch_op.drop_index("ix_inference_transcripts_expires")
        batch_op.drop_index("ix_inference_transcripts_tenant")
    op.drop_table("inference_transcripts")
    with op.batch_alter_table("inference_calls", schema=None) as batch_op:
        batch_op.drop_index("ix_inference_calls_tenant_created")
        batch_op.drop_index("ix_inference_calls_model_created")
        batch_op.drop_index("ix_inference_calls_version_created")
    op.drop_table("inference_calls")
