"""data sources: conflicting-answer gate and the overlap gate's tolerance

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07 20:40:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Existing sources keep today's overlap gate: similarity 0.8, no line allowed.
    with op.batch_alter_table("data_sources") as batch:
        batch.add_column(sa.Column("max_conflict_rate", sa.Float(), nullable=True))
        batch.add_column(
            sa.Column("overlap_threshold", sa.Float(), nullable=False, server_default="0.8")
        )
        batch.add_column(
            sa.Column("max_overlapping_lines", sa.Integer(), nullable=False, server_default="0")
        )


def downgrade() -> None:
    with op.batch_alter_table("data_sources") as batch:
        batch.drop_column("max_overlapping_lines")
        batch.drop_column("overlap_threshold")
        batch.drop_column("max_conflict_rate")
