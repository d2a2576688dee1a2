"""tenancy of shared objects (issue 19 §4): a base model is global or a tenant's own

Existing base models stay global (`tenant` NULL): every tenant sees them, and from now on
only the platform admin retires them.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-09 10:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("base_models") as batch:
        batch.add_column(sa.Column("tenant", sa.String(64), nullable=True))
        batch.create_index("ix_base_models_tenant", ["tenant"])


def downgrade() -> None:
    with op.batch_alter_table("base_models") as batch:
        batch.drop_index("ix_base_models_tenant")
        batch.drop_column("tenant")
