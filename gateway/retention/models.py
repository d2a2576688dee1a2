from __future__ import annotations

from sqlalchemy import BigInteger, Column, ForeignKey, Index, String
from sqlmodel import Field, SQLModel


class RetentionWarning(SQLModel, table=True):
    """The owner was told, once, that this file's content is due for deletion: what
    "waiting for me" lists until the content goes (gateway.retention.service)."""

    __tablename__ = "retention_warnings"
    __table_args__ = (Index("ix_retention_warnings_tenant_owner", "tenant", "owner"),)

    file_id: str = Field(
        sa_column=Column(String(40), ForeignKey("training_files.id"), primary_key=True)
    )
    tenant: str = Field(sa_column=Column(String(64), nullable=False))
    data_source_id: str = Field(sa_column=Column(String(64), nullable=False))
    owner: str = Field(sa_column=Column(String(128), nullable=False))
    delete_after: int = Field(sa_column=Column(BigInteger, nullable=False))
    warned_at: str = Field(sa_column=Column(String(32), nullable=False))
