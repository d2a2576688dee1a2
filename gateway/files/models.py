from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, BigInteger, Column, ForeignKey, Index, Integer, String, Text
from sqlmodel import Field, SQLModel


class TrainingFile(SQLModel, table=True):
    """One uploaded file version. Immutable once written, except that erasure may delete
    its content: the row (hashes, datasheet, lineage) stays, so the trail still resolves.

    ``sha256``/``bytes`` describe the bytes as uploaded; ``content_sha256`` names what is
    stored and trained on: the redacted derivative when the source redacts PII, the upload
    itself otherwise."""

    __tablename__ = "training_files"
    __table_args__ = (
        Index("ix_training_files_tenant_created", "tenant", "created_at"),
        Index("ix_training_files_tenant_source", "tenant", "data_source_id"),
    )

    id: str = Field(sa_column=Column(String(40), primary_key=True))
    tenant: str = Field(sa_column=Column(String(64), nullable=False))
    data_source_id: str = Field(
        sa_column=Column(String(64), ForeignKey("data_sources.id"), nullable=False)
    )
    purpose: str = Field(sa_column=Column(String(32), nullable=False))
    filename: str = Field(sa_column=Column(String(255), nullable=False))
    bytes: int = Field(sa_column=Column(BigInteger, nullable=False))
    sha256: str = Field(sa_column=Column(String(64), nullable=False))
    status: str = Field(sa_column=Column(String(16), nullable=False))
    status_details: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    pii_action: str = Field(sa_column=Column(String(8), nullable=False))
    report: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    content_sha256: str | None = Field(default=None, sa_column=Column(String(64), nullable=True))
    content_bytes: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    examples: int = Field(default=0, sa_column=Column(Integer, nullable=False))
    redaction: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    created_at: int = Field(sa_column=Column(BigInteger, nullable=False))
    created_by: str = Field(sa_column=Column(String(128), nullable=False))
    content_deleted_at: str | None = Field(
        default=None, sa_column=Column(String(32), nullable=True)
    )
    content_deleted_by: str | None = Field(
        default=None, sa_column=Column(String(128), nullable=True)
    )
    erasure_request_id: str | None = Field(
        default=None, sa_column=Column(String(40), nullable=True)
    )
    # DELETE /v1/files/{id} (not erasure): content gone, the row and its hashes stay
    deleted_at: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    deleted_by: str | None = Field(default=None, sa_column=Column(String(128), nullable=True))
