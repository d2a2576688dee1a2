"""Fine-tuned model versions: what a successful job registers, with everything a
compliance officer needs to say where it came from."""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, BigInteger, Column, ForeignKey, Index, String, Text
from sqlmodel import Field, SQLModel

# candidate -> production -> retired (a candidate may also be retired directly; deleting
# a candidate retires it)
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
    # the flags a compliance officer cleared: each flag as raised, with cleared_by,
    # cleared_at, the reason's sha256 and the reason itself (kept here, hashed in the trail)
    cleared_flags: list[dict[str, Any]] = Field(
        default_factory=list, sa_column=Column(JSON, nullable=False, server_default="[]")
    )
    # DELETE /v1/models/{id}: the adapter bytes are gone, the row, lineage and dossier stay
    deleted_at: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    deleted_by: str | None = Field(default=None, sa_column=Column(String(128), nullable=True))


# pending -> approved | rejected; a request still pending when its model stops being a
# candidate is closed as withdrawn (the model was retired or deleted). One pending request
# per model at a time.
PROMOTION_STATUSES = ("pending", "approved", "rejected", "withdrawn")


class PromotionRequest(SQLModel, table=True):
    """Someone asks for a candidate to go to production; a compliance officer who neither
    asked nor trained it approves (and the model is promoted) or rejects. Each step keeps
    who took it and the policy version that allowed it."""

    __tablename__ = "promotion_requests"
    __table_args__ = (
        Index("ix_promotion_requests_tenant_created", "tenant", "created_ns", "id"),
        Index("ix_promotion_requests_model_status", "model_id", "status"),
    )

    id: str = Field(sa_column=Column(String(40), primary_key=True))
    tenant: str = Field(sa_column=Column(String(64), nullable=False))
    model_id: str = Field(
        sa_column=Column(String(128), ForeignKey("model_versions.id"), nullable=False)
    )
    status: str = Field(sa_column=Column(String(16), nullable=False))
    # free text: kept here, only its sha256 in the audit trail
    reason: str = Field(sa_column=Column(Text, nullable=False))
    # the model's evaluation verdict when the request was made
    verdict: str | None = Field(default=None, sa_column=Column(String(16), nullable=True))
    # required when that verdict was not "passed"
    override_reason: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    # who asked for the training (four eyes: never the approver)
    trained_by: str = Field(sa_column=Column(String(128), nullable=False))
    requested_by: str = Field(sa_column=Column(String(128), nullable=False))
    requested_at: int = Field(sa_column=Column(BigInteger, nullable=False))
    created_ns: int = Field(sa_column=Column(BigInteger, nullable=False))
    request_policy_version: str | None = Field(
        default=None, sa_column=Column(String(64), nullable=True)
    )
    decided_by: str | None = Field(default=None, sa_column=Column(String(128), nullable=True))
    decided_at: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    decision_reason: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    decision_policy_version: str | None = Field(
        default=None, sa_column=Column(String(64), nullable=True)
    )
