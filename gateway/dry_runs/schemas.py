"""What a job submission's dry run answers (the request is the submission's own JobCreate)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field


class GateRefusal(BaseModel):
    gate: str = Field(description="policy, model, file, data_source_approved, purpose, ...")
    status: int = Field(description="the HTTP status the submission would get")
    code: str
    message: str
    param: str | None = None
    details: dict[str, Any] | None = None


class JobDryRunPublic(BaseModel):
    object: Literal["fine_tuning.job.dry_run"] = "fine_tuning.job.dry_run"
    would_pass: bool
    estimate: dict[str, Any] | None = Field(
        description="tokens x epochs -> FLOPs -> device-hours (null when the model or the "
        "training file cannot be read)"
    )
    refusals: list[GateRefusal] = Field(description="every gate that would refuse, in order")
    decisions: list[dict[str, Any]] = Field(description="the decisions and gates that passed")

    @classmethod
    def of(cls, run: Any) -> JobDryRunPublic:
        return cls(
            would_pass=run.would_pass,
            estimate=run.estimate,
            refusals=[GateRefusal.model_validate(r, from_attributes=True) for r in run.refusals],
            decisions=run.decisions,
        )
