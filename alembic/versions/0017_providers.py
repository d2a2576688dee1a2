"""external fine-tuning providers (issue 18 §1) and the transfers a data source allows

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-08 10:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A provider's secret has no column: only the reference to where it is read from.
    op.create_table(
        "providers",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("base_url", sa.Text(), nullable=False),
        sa.Column("regions", sa.JSON(), nullable=False),
        sa.Column("credential_ref", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("registered_by", sa.String(128), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("retired_by", sa.String(128), nullable=True),
        sa.Column("retired_at", sa.BigInteger(), nullable=True),
    )
    op.create_index("ix_providers_status", "providers", ["status"])
    op.create_table(
        "provider_models",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("provider", sa.String(64), sa.ForeignKey("providers.name"), nullable=False),
        sa.Column("provider_model", sa.Text(), nullable=False),
    )
    op.create_index("ix_provider_models_provider", "provider_models", ["provider"])
    with op.batch_alter_table("data_sources") as batch:
        batch.add_column(sa.Column("transfers", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("data_sources") as batch:
        batch.drop_column("transfers")
    op.drop_index("ix_provider_models_provider", table_name="provider_models")
    op.drop_table("provider_models")
    op.drop_index("ix_providers_status", table_name="providers")
    op.drop_table("providers")
