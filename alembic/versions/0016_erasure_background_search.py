"""erasure requests: the search runs in the background, resumable, with progress

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07 20:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("erasure_requests") as batch:
        batch.add_column(sa.Column("search", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("search_owner", sa.String(64), nullable=True))
        batch.add_column(sa.Column("search_lease_until", sa.BigInteger(), nullable=True))
    with op.batch_alter_table("erasure_salts") as batch:
        batch.add_column(sa.Column("pending_subject", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("erasure_salts") as batch:
        batch.drop_column("pending_subject")
    with op.batch_alter_table("erasure_requests") as batch:
        batch.drop_column("search_lease_until")
        batch.drop_column("search_owner")
        batch.drop_column("search")
