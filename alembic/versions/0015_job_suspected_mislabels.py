"""suspected mislabels: training lines a finished job's tuned model disagrees with

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07 20:45:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "job_suspected_mislabels",
        sa.Column("id", sa.String(length=40), primary_key=True),
        sa.Column(
            "job_id", sa.String(length=32), sa.ForeignKey("fine_tuning_jobs.id"), nullable=False
        ),
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("file_id", sa.String(length=40), nullable=False),
        sa.Column("line", sa.Integer(), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("loss", sa.Float(), nullable=False),
        sa.Column("reason", sa.String(length=40), nullable=False),
        sa.Column("field", sa.String(length=128), nullable=True),
        sa.Column("label", sa.Text(), nullable=False),
        sa.Column("model_answer", sa.Text(), nullable=True),
        sa.Column("review_status", sa.String(length=24), nullable=False),
        sa.Column("reviewed_by", sa.String(length=128), nullable=True),
        sa.Column("reviewed_at", sa.BigInteger(), nullable=True),
        sa.Column("review_reason", sa.Text(), nullable=True),
    )
    op.create_index(
        "ix_job_suspected_mislabels_job_line", "job_suspected_mislabels", ["job_id", "line", "id"]
    )


def downgrade() -> None:
    op.drop_index("ix_job_suspected_mislabels_job_line", table_name="job_suspected_mislabels")
    op.drop_table("job_suspected_mislabels")
