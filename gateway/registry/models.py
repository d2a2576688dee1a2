"""Fine-tuned model versions: what a successful job registers, with everything a
compliance officer needs to say where it came from."""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, BigInteger, Column, ForeignKey, Index, String, Text
from sqlmodel import Field, SQLModel

# candidate -> production -> retired (a candidate may also be retired directly)
MODEL_STATUSES = ("candidate", "production", "retired")


class ModelVersion(SQLModel, table=True):
    __tablename__ = "model_versions"
    __table_args__ = (
        Index("ix_model_versions_tenant_status", "tenant", "status"),
        Index("ix_model_versions_job", "job_id"),
    )

    # ft:<base>:<tenant>:<suffix>:<job id>, as OpenAI names fine-tuned models
    id: str = Field(sa_column=Column(String(128), primary_key=True))
    tenant: str = Field(sa_column=Column(String(64), nullable=False))
    job_id: str = Field(
        sa_column=Column(String(32), ForeignKey("fine_tuning_jobs.id"), nullable=False)
    )
    created_at: int = Field(sa_column=Column(BigInteger, nullable=False))
    requested_by: str = Field(sa_column=Column(String(128), nullable=False))
    purpose: str = Field(sa_column=Column(String(64), nullable=False))
    status: str = Field(sa_column=Column(String(16), nullable=False))
    base_model: str = Field(sa_column=Column(String(64), nullable=False))
    base_manifest_sha256: str = Field(sa_column=Column(String(64), nullable=False))
    parent_model_id: str | None = Field(default=None, sa_column=Column(String(128), nullable=True))
    # [{role: training|validation, file_id, data_source, sha256, content_sha256, redaction}]
    data_files: list[dict[str, Any]] = Field(sa_column=Column(JSON, nullable=False))
    # every gate and authorization decision of the job, with its policy version
    decisions: list[dict[str, Any]] = Field(sa_column=Column(JSON, nullable=False))
    hyperparameters: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    seed: int = Field(sa_column=Column(BigInteger, nullable=False))
    library_versions: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    compute: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    evaluation: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    verdict: str | None = Field(default=None, sa_column=Column(String(16), nullable=True))
    # [{relative_path, sha256, bytes}] of the adapter directory, hashed by the gateway
    adapter_files: list[dict[str, Any]] = Field(sa_column=Column(JSON, nullable=False))
    adapter_sha256: str = Field(sa_column=Column(String(64), nullable=False))
    artifact_dir: str = Field(sa_column=Column(Text, nullable=False))
    promoted_by: str | None = Field(default=None, sa_column=Column(String(128), nullable=True))
    promoted_at: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    promotion_override_reason: str | None = Field(
        default=None, sa_column=Column(Text, nullable=True)
    )
    retired_by: str | None = Field(default=None, sa_column=Column(String(128), nullable=True))
    retired_at: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    # [{reason: data_source_revoked|erasure_requested, ref, at}]: why it needs a look
    flags: list[dict[str, Any]] = Field(
        default_factory=list, sa_column=Column(JSON, nullable=False)
    )
