from __future__ import annotations

from sqlalchemy import JSON, Column, Index, String, Text, UniqueConstraint
from sqlmodel import Field, SQLModel


class DataSource(SQLModel, table=True):
    """An approved (or proposed, or revoked) home for training data. Its id names it in
    the policy (`ds:<id>`); approval classifies it there (`g2, ds:<id>, class:<label>`)."""

    __tablename__ = "data_sources"
    __table_args__ = (
        UniqueConstraint("tenant", "name", name="uq_data_sources_tenant_name"),
        Index("ix_data_sources_tenant_status", "tenant", "status"),
    )

    id: str = Field(sa_column=Column(String(64), primary_key=True))
    tenant: str = Field(sa_column=Column(String(64), nullable=False))
    name: str = Field(sa_column=Column(String(128), nullable=False))
    description: str = Field(default="", sa_column=Column(Text, nullable=False))
    classification: str = Field(sa_column=Column(String(16), nullable=False))
    contains_personal_data: bool = Field(default=False)
    legal_basis: str | None = Field(default=None, sa_column=Column(String(64), nullable=True))
    allowed_purposes: list[str] = Field(
        default_factory=list, sa_column=Column(JSON, nullable=False)
    )
    owner: str = Field(sa_column=Column(String(128), nullable=False))
    retention_days: int
    pii_action: str = Field(sa_column=Column(String(8), nullable=False))
    min_examples: int = Field(default=500)
    # data-quality gates (issue 17): conflicting answers, and the overlap gate's tolerance
    max_conflict_rate: float | None = Field(default=None)
    overlap_threshold: float = Field(default=0.8)
    max_overlapping_lines: int = Field(default=0)
    status: str = Field(sa_column=Column(String(16), nullable=False))
    proposed_by: str = Field(sa_column=Column(String(128), nullable=False))
    proposed_at: str = Field(sa_column=Column(String(32), nullable=False))
    approved_by: str | None = Field(default=None, sa_column=Column(String(128), nullable=True))
    approved_at: str | None = Field(default=None, sa_column=Column(String(32), nullable=True))
    approval_policy_version: str | None = Field(
        default=None, sa_column=Column(String(64), nullable=True)
    )
    revoked_by: str | None = Field(default=None, sa_column=Column(String(128), nullable=True))
    revoked_at: str | None = Field(default=None, sa_column=Column(String(32), nullable=True))
    revoke_reason: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    # retention and the regulators' records (issue 16 §3-4, gateway.retention and
    # gateway.compliance; migration 0011): a legal hold suspends retention deletion
    legal_hold: bool = Field(default=False)
    legal_hold_reason: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    legal_hold_by: str | None = Field(default=None, sa_column=Column(String(128), nullable=True))
    legal_hold_at: str | None = Field(default=None, sa_column=Column(String(32), nullable=True))
    data_origin: str | None = Field(default=None, sa_column=Column(String(16), nullable=True))
    data_subject_categories: list[str] | None = Field(
        default=None, sa_column=Column(JSON, nullable=True)
    )
    data_categories: list[str] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    # the transfers to external providers its record allows (gateway.providers; 0017)
    transfers: list[dict] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
