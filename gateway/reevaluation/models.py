"""Re-evaluations of released model versions: the held-out evaluation set and the OOD
probe run again on the registered adapter, compared with the figures at promotion."""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, Column, Float, ForeignKey, Index, String
from sqlmodel import Field, SQLModel

# queued -> running -> succeeded | failed
REEVALUATION_STATUSES = ("queued", "running", "succeeded", "failed")
ACTIVE_STATUSES = ("queued", "running")
# on_demand: POST /v1/models/{id}/reevaluations; schedule: every reevaluate_every_days
TRIGGERS = ("on_demand", "schedule")


class Reevaluation(SQLModel, table=True):
    __tablename__ = "reevaluations"
    __table_args__ = (
        Index("ix_reevaluations_model_created", "model_id", "created_ns", "id"),
        Index("ix_reevaluations_status_created", "status", "created_ns"),
    )

    id: str = Field(sa_column=Column(String(40), primary_key=True))
    tenant: str = Field(sa_column=Column(String(64), nullable=False))
    model_id: str = Field(
        sa_column=Column(String(128), ForeignKey("model_versions.id"), nullable=False)
    )
    trigger: str = Field(sa_column=Column(String(16), nullable=False))
    requested_by: str = Field(sa_column=Column(String(128), nullable=False))
    created_at: int = Field(sa_column=Column(BigInteger, nullable=False))
    created_ns: int = Field(sa_column=Column(BigInteger, nullable=False))
    status: str = Field(sa_column=Column(String(16), nullable=False))
    # 0..1, with the phase it is in (queued, loading, evaluating, comparing, done)
    progress: float = Field(default=0.0, sa_column=Column(Float, nullable=False))
    phase: str = Field(default="queued", sa_column=Column(String(16), nullable=False))
    # the decision that allowed it: the policy's (on demand) or the schedule's setting
    decision: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    # the adapter hash the registry held when it was asked for, re-checked on the bytes
    adapter_sha256: str = Field(sa_column=Column(String(64), nullable=False))
    started_at: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    finished_at: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    # the new evaluation report (trainer.evaluate's shape) and the comparison with the one
    # at promotion: {metrics: [{name, at_promotion, now, change, limit, degraded}], ...}
    report: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    comparison: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    degraded: bool | None = Field(default=None, sa_column=Column(Boolean, nullable=True))
    # {code, message} when it failed
    error: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
