"""Fine-tuning jobs, their events and checkpoints (OpenAI's objects), and the lease a
worker holds while it runs one."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
)
from sqlmodel import Field, SQLModel

# validating_files -> queued -> running -> succeeded | failed | cancelled; a running job
# may be paused: running -> pausing (until the next step's checkpoint) -> paused, and
# resumed: paused -> queued. A paused job holds no worker and counts in no quota.
ACTIVE_STATUSES = ("validating_files", "queued", "running", "pausing")
# The statuses a worker holds the job's lease in.
LEASED_STATUSES = ("running", "pausing")
FINAL_STATUSES = ("succeeded", "failed", "cancelled")
# A forward and a backward pass cost about 6 FLOPs per parameter per token (Kaplan et al.);
# LoRA skips the frozen weights' gradients, so this is an upper bound. Both the estimate
# before a job and its recorded compute after use it, so the two compare.
FLOPS_PER_PARAMETER_TOKEN = 6


class FineTuningJob(SQLModel, table=True):
    __tablename__ = "fine_tuning_jobs"
    __table_args__ = (
        # Covering the monthly quota's SUM and the active-jobs COUNT: both are answered
        # from the index alone, so a submission's quota check stays fast as jobs pile up.
        Index(
            "ix_fine_tuning_jobs_tenant_created", "tenant", "created_ns", "estimated_device_seconds"
        ),
        Index("ix_fine_tuning_jobs_tenant_status", "tenant", "status"),
        Index("ix_fine_tuning_jobs_status", "status"),
    )

    id: str = Field(sa_column=Column(String(32), primary_key=True))
    tenant: str = Field(sa_column=Column(String(64), nullable=False))
    created_by: str = Field(sa_column=Column(String(128), nullable=False))
    created_at: int = Field(sa_column=Column(BigInteger, nullable=False))
    # Orders jobs created within the same second (created_at is whole seconds, as OpenAI's).
    created_ns: int = Field(sa_column=Column(BigInteger, nullable=False))
    # What was asked: `model` is a base model's name or an earlier fine-tuned model's id.
    model: str = Field(sa_column=Column(String(128), nullable=False))
    base_model: str = Field(sa_column=Column(String(64), nullable=False))
    parent_model_id: str | None = Field(default=None, sa_column=Column(String(128), nullable=True))
    training_file: str = Field(sa_column=Column(String(40), nullable=False))
    validation_file: str | None = Field(default=None, sa_column=Column(String(40), nullable=True))
    purpose: str = Field(sa_column=Column(String(64), nullable=False))
    suffix: str | None = Field(default=None, sa_column=Column(String(64), nullable=True))
    seed: int = Field(sa_column=Column(BigInteger, nullable=False))
    user_metadata: dict[str, str] | None = Field(
        default=None, sa_column=Column("metadata", JSON, nullable=True)
    )
    hyperparameters: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    lora: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    evaluation: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    # The TrainSpec a worker runs (paths resolved at submission), and every gate decision
    # with the policy version that made it.
    spec: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    decisions: list[dict[str, Any]] = Field(sa_column=Column(JSON, nullable=False))
    estimate: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    # The estimate's device time as a column, so the monthly quota is one SUM.
    estimated_device_seconds: float = Field(sa_column=Column(Float, nullable=False))
    status: str = Field(sa_column=Column(String(24), nullable=False))
    error: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    fine_tuned_model: str | None = Field(default=None, sa_column=Column(String(128), nullable=True))
    # OpenAI's trained_tokens: every token of the training examples, times the epochs (what
    # OpenAI bills); trained_target_tokens: the assistant tokens among them, the loss's.
    trained_tokens: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    trained_target_tokens: int | None = Field(
        default=None, sa_column=Column(BigInteger, nullable=True)
    )
    integrations: list[dict[str, Any]] | None = Field(
        default=None, sa_column=Column(JSON, nullable=True)
    )
    estimated_finish: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    finished_at: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    result_files: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    compute: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    cancel_requested: bool = Field(
        default=False, sa_column=Column(Boolean, nullable=False, default=False)
    )
    executor: str = Field(sa_column=Column(String(16), nullable=False))
    # The worker that holds the job, until when (epoch seconds); renewed while it runs.
    lease_owner: str | None = Field(default=None, sa_column=Column(String(128), nullable=True))
    lease_expires_at: float | None = Field(default=None, sa_column=Column(Float, nullable=True))
    attempts: int = Field(default=0, sa_column=Column(Integer, nullable=False, default=0))


class JobEvent(SQLModel, table=True):
    """OpenAI's fine_tuning.job.event; ``seq`` orders them (and is the SSE event id)."""

    __tablename__ = "fine_tuning_job_events"
    __table_args__ = (Index("ix_fine_tuning_job_events_job_seq", "job_id", "seq"),)

    seq: int | None = Field(
        default=None,
        sa_column=Column(
            BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
        ),
    )
    job_id: str = Field(
        sa_column=Column(String(32), ForeignKey("fine_tuning_jobs.id"), nullable=False)
    )
    created_at: int = Field(sa_column=Column(BigInteger, nullable=False))
    level: str = Field(sa_column=Column(String(8), nullable=False))  # info | warn | error
    type: str = Field(sa_column=Column(String(16), nullable=False))  # message | metrics
    message: str = Field(sa_column=Column(Text, nullable=False))
    data: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))


class JobCheckpoint(SQLModel, table=True):
    """OpenAI's fine_tuning.job.checkpoint: an adapter written during the run."""

    __tablename__ = "fine_tuning_job_checkpoints"
    __table_args__ = (Index("ix_fine_tuning_job_checkpoints_job_step", "job_id", "step"),)

    id: str = Field(sa_column=Column(String(40), primary_key=True))
    job_id: str = Field(
        sa_column=Column(String(32), ForeignKey("fine_tuning_jobs.id"), nullable=False)
    )
    created_at: int = Field(sa_column=Column(BigInteger, nullable=False))
    step: int = Field(sa_column=Column(Integer, nullable=False))
    metrics: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    adapter_sha256: str = Field(sa_column=Column(String(64), nullable=False))
    path: str = Field(sa_column=Column(Text, nullable=False))
