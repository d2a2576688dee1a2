from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, String, Text
from sqlmodel import Field, SQLModel


class RegisteredBaseModel(SQLModel, table=True):
    """A base model in the content store (`<artifact_dir>/base_models/<name>`): global
    (`tenant` None: every tenant sees it, only the platform admin changes it) or a tenant's
    own (seen in that tenant only). Its name names it in the policy (`base:<name>`) and is
    unique across all of them. Names are never reused, retired or not, so lineage that cites
    one always means the same bytes."""

    __tablename__ = "base_models"
    __table_args__ = (
        Index("ix_base_models_status", "status"),
        Index("ix_base_models_tenant", "tenant"),
    )

    name: str = Field(sa_column=Column(String(64), primary_key=True))
    status: str = Field(sa_column=Column(String(16), nullable=False))
    # The tenant whose admin registered it; None: global, registered by the platform admin.
    tenant: str | None = Field(default=None, sa_column=Column(String(64), nullable=True))
    license: str = Field(sa_column=Column(String(64), nullable=False))
    description: str = Field(default="", sa_column=Column(Text, nullable=False))
    source_kind: str = Field(sa_column=Column(String(16), nullable=False))
    # The server path or package requirement it was imported from: provenance only, the
    # stored copy is what gets used.
    source: str = Field(sa_column=Column(Text, nullable=False))
    manifest_sha256: str = Field(sa_column=Column(String(64), nullable=False))
    architecture: str | None = Field(default=None, sa_column=Column(String(128), nullable=True))
    parameter_count: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    registered_by: str = Field(sa_column=Column(String(128), nullable=False))
    created_at: int = Field(sa_column=Column(BigInteger, nullable=False))
    retired_by: str | None = Field(default=None, sa_column=Column(String(128), nullable=True))
    retired_at: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
