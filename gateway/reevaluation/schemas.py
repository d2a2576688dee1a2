"""Re-evaluations as the API returns them."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

ReevaluationStatus = Literal["queued", "running", "succeeded", "failed"]


class ReevaluationMetric(BaseModel):
    """A task metric of the tuned system, now against the figure at promotion."""

    name: str
    at_promotion: float
    now: float
    change: float = Field(description="now - at_promotion")
    limit: float = Field(description="a change below this degrades (-reevaluation_max_drop)")
    degraded: bool


class ReevaluationOod(BaseModel):
    """The OOD probe's loss with the adapter on, now against the figure at promotion."""

    at_promotion: float
    now: float
    relative_change: float
    limit: float = Field(description="a rise above this degrades (reevaluation_max_ood_increase)")
    degraded: bool


class ReevaluationComparison(BaseModel):
    metrics: list[ReevaluationMetric]
    ood_probe: ReevaluationOod | None
    max_drop: float
    max_ood_increase: float
    degraded: bool


class ReevaluationError(BaseModel):
    code: str
    message: str


class ReevaluationPublic(BaseModel):
    """A re-evaluation of a model version: who or what asked (on demand, or the schedule),
    the decision that allowed it, its progress, the new report and its comparison with
    the figures at promotion."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    object: Literal["model.reevaluation"] = "model.reevaluation"
    model_id: str
    trigger: Literal["on_demand", "schedule"]
    requested_by: str
    created_at: int = Field(description="epoch seconds")
    status: ReevaluationStatus
    phase: str = Field(description="queued, loading, evaluating, comparing, done")
    progress: float = Field(description="0..1")
    decision: dict[str, Any] = Field(description="the policy's, or the schedule's setting")
    adapter_sha256: str
    started_at: int | None
    finished_at: int | None
    degraded: bool | None
    comparison: ReevaluationComparison | None
    report: dict[str, Any] | None = Field(description="trainer.evaluate's report")
    error: ReevaluationError | None


class ReevaluationsPage(BaseModel):
    object: Literal["list"] = "list"
    data: list[ReevaluationPublic]
    has_more: bool
    next_after: str | None = None
