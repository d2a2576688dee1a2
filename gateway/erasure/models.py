from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, BigInteger, Column, ForeignKey, Index, String, Text
from sqlmodel import Field, SQLModel


class ErasureRequest(SQLModel, table=True):
    """A data subject's erasure request (GDPR Art. 17). The identifier itself is never
    stored: only its salted hash, whose salt lives in ``erasure_salts`` and can be
    destroyed, after which nothing here (or in the audit trail) links back to the person."""

    __tablename__ = "erasure_requests"
    __table_args__ = (Index("ix_erasure_requests_tenant_status", "tenant", "status"),)

    id: str = Field(sa_column=Column(String(40), primary_key=True))
    tenant: str = Field(sa_column=Column(String(64), nullable=False))
    subject_sha256: str = Field(sa_column=Column(String(64), nullable=False))
    reference: str | None = Field(default=None, sa_column=Column(String(128), nullable=True))
    status: str = Field(sa_column=Column(String(16), nullable=False))
    findings: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    requested_by: str = Field(sa_column=Column(String(128), nullable=False))
    requested_at: str = Field(sa_column=Column(String(32), nullable=False))
    decision: str | None = Field(default=None, sa_column=Column(String(16), nullable=True))
    decision_reason: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    decided_by: str | None = Field(default=None, sa_column=Column(String(128), nullable=True))
    decided_at: str | None = Field(default=None, sa_column=Column(String(32), nullable=True))
    salt_destroyed: bool = Field(default=False)
    # A background search (gateway.erasure.search): its progress and partial findings,
    # and which gateway process holds it until when (ms since the epoch).
    search: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    search_owner: str | None = Field(default=None, sa_column=Column(String(64), nullable=True))
    search_lease_until: int | None = Field(
        default=None, sa_column=Column(BigInteger, nullable=True)
    )


class ErasureSalt(SQLModel, table=True):
    """Kept apart from the request (and from the chain) so destroying it is one DELETE."""

    __tablename__ = "erasure_salts"

    request_id: str = Field(
        sa_column=Column(String(40), ForeignKey("erasure_requests.id"), primary_key=True)
    )
    salt: str = Field(sa_column=Column(String(64), nullable=False))
    # The identifier itself, only while a background search needs it (so a restarted
    # gateway can resume): outside the chain, never returned or logged, cleared at the end.
    pending_subject: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
