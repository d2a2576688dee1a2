"""OpenAI's fine-tuning job objects, and tunegate's extensions (purpose, lora, evaluation)
that the SDK sends with ``extra_body``."""

from __future__ import annotations

import re
from typing import Annotated, Any, Final, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from gateway.fields import Purpose
from gateway.jobs.naming import checkpoint_model_id

JOB_ID: Final = re.compile(r"^ftjob-[0-9a-f]{16}$")
Auto = Literal["auto"]
ModuleName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_.]{0,63}$")]
MetadataKey = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[^\x00]*$")]
MetadataValue = Annotated[str, StringConstraints(max_length=512, pattern=r"^[^\x00]*$")]


def _auto_or(rule: str) -> WrapValidator:
    """A hyperparameter's refusal states its rule ("an integer ≥ 1 or 'auto'"), never
    only the union's first member ("Input should be 'auto'")."""

    def checked(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        try:
            return handler(value)
        except ValidationError:
            raise PydanticCustomError("auto_or_number", "must be {rule}", {"rule": rule}) from None

    return WrapValidator(checked)


NEpochs = Annotated[
    Auto | Annotated[int, Field(ge=1, le=50)], _auto_or("an integer ≥ 1 or 'auto' (at most 50)")
]
BatchSize = Annotated[
    Auto | Annotated[int, Field(ge=1, le=256)], _auto_or("an integer ≥ 1 or 'auto' (at most 256)")
]
LearningRateMultiplier = Annotated[
    Auto | Annotated[float, Field(gt=0, le=10)], _auto_or("a number > 0 or 'auto' (at most 10)")
]


class HyperparametersIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    n_epochs: NEpochs = "auto"
    batch_size: BatchSize = "auto"
    learning_rate_multiplier: LearningRateMultiplier = "auto"


class SupervisedMethod(BaseModel):
    model_config = ConfigDict(extra="forbid")

    hyperparameters: HyperparametersIn = Field(default_factory=HyperparametersIn)


Beta = Annotated[
    Auto | Annotated[float, Field(gt=0, le=2)], _auto_or("a number > 0 or 'auto' (at most 2)")
]


class DpoHyperparametersIn(HyperparametersIn):
    beta: Beta = "auto"


class DpoMethod(BaseModel):
    model_config = ConfigDict(extra="forbid")

    hyperparameters: DpoHyperparametersIn = Field(default_factory=DpoHyperparametersIn)


class MethodIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Supervised fine-tuning and DPO are offered; "reinforcement" is refused with a reason
    # rather than silently trained as something else.
    type: Literal["supervised", "dpo"]
    supervised: SupervisedMethod = Field(default_factory=SupervisedMethod)
    dpo: DpoMethod | None = None

    @model_validator(mode="after")
    def _settings_of_its_type(self) -> MethodIn:
        if self.type == "dpo":
            if "supervised" in self.model_fields_set:
                raise ValueError("method 'dpo' takes its settings in 'dpo', not 'supervised'")
            self.dpo = self.dpo or DpoMethod()
        elif self.dpo is not None:
            raise ValueError("method 'supervised' takes its settings in 'supervised', not 'dpo'")
        return self

    @property
    def hyperparameters(self) -> HyperparametersIn:
        """The hyperparameters every method shares (DPO's beta is apart: ``dpo_beta``)."""
        if self.dpo is not None:
            shared = self.dpo.hyperparameters.model_dump(exclude={"beta"})
            return HyperparametersIn.model_validate(shared)
        return self.supervised.hyperparameters


class LoraIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    r: int = Field(16, ge=1, le=256)
    alpha: int = Field(32, ge=1, le=1024)
    dropout: float = Field(0.0, ge=0.0, lt=0.9)
    target_modules: list[ModuleName] | None = Field(None, min_length=1, max_length=32)


class EvaluationIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    min_exact_match_margin: float = Field(0.05, ge=-1.0, le=1.0)
    max_ood_loss_increase: float = Field(0.10, ge=0.0, le=10.0)
    held_out_fraction: float = Field(0.1, gt=0.0, lt=0.5)
    max_generation_examples: int | None = Field(None, ge=1, le=100_000)
    max_new_tokens: int = Field(128, ge=1, le=4096)
    generation_batch_size: int = Field(8, ge=1, le=256)
    few_shot_examples: int = Field(3, ge=0, le=32)


class MislabelsIn(BaseModel):
    """Suspected-mislabel scoring after training (trainer.spec.MislabelSpec)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    z_threshold: float = Field(3.5, gt=0.0, le=100.0)


class WandbIn(BaseModel):
    """OpenAI's Weights and Biases integration settings (stored and echoed; tunegate
    reports to no external service)."""

    model_config = ConfigDict(extra="forbid")

    project: str = Field(min_length=1, max_length=128)
    name: str | None = Field(None, max_length=128)
    entity: str | None = Field(None, max_length=128)
    tags: list[Annotated[str, StringConstraints(min_length=1, max_length=64)]] | None = Field(
        None, max_length=32
    )


class IntegrationIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["wandb"]
    wandb: WandbIn


class JobCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:@-]+$")
    training_file: str = Field(max_length=64, pattern=r"^[A-Za-z0-9._-]+$")
    validation_file: str | None = Field(None, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")
    hyperparameters: HyperparametersIn | None = None
    method: MethodIn | None = None
    suffix: str | None = Field(None, min_length=1, max_length=40, pattern=r"^[A-Za-z0-9._-]+$")
    seed: int | None = Field(None, ge=0, le=2**31 - 1)
    metadata: dict[MetadataKey, MetadataValue] | None = Field(None, max_length=16)
    integrations: list[IntegrationIn] | None = Field(None, max_length=8)
    purpose: Purpose | None = None
    lora: LoraIn = Field(default_factory=LoraIn)
    evaluation: EvaluationIn = Field(default_factory=EvaluationIn)
    # Suspected mislabels: a job whose confirmed-wrong lines (same training file) are left out.
    exclude_lines_from: str | None = Field(None, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")
    mislabels: MislabelsIn = Field(default_factory=MislabelsIn)

    @model_validator(mode="after")
    def _one_place_for_hyperparameters(self) -> JobCreate:
        if self.hyperparameters is not None and self.method is not None:
            raise ValueError("give hyperparameters either at the top level or in method")
        if self.purpose is None and not (self.metadata and self.metadata.get("purpose")):
            raise ValueError("purpose is required (or metadata.purpose)")
        return self

    @property
    def resolved_purpose(self) -> str:
        return self.purpose or (self.metadata or {})["purpose"]

    @property
    def requested_hyperparameters(self) -> HyperparametersIn:
        if self.method is not None:
            return self.method.hyperparameters
        return self.hyperparameters or HyperparametersIn()

    @property
    def training_method(self) -> str:
        return self.method.type if self.method is not None else "supervised"

    @property
    def dpo_beta(self) -> float | str:
        dpo = self.method.dpo if self.method is not None else None
        return dpo.hyperparameters.beta if dpo is not None else "auto"


class JobError(BaseModel):
    code: str
    message: str
    param: str | None = None


class JobPublic(BaseModel):
    """OpenAI's fine_tuning.job, plus the governance record of the job."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    object: Literal["fine_tuning.job"] = "fine_tuning.job"
    created_at: int
    error: JobError | None
    fine_tuned_model: str | None
    finished_at: int | None
    hyperparameters: dict[str, Any]
    model: str
    organization_id: str
    result_files: list[str]
    seed: int
    status: str
    trained_tokens: int | None
    training_file: str
    validation_file: str | None
    integrations: list[Any] | None = None
    estimated_finish: int | None
    method: dict[str, Any]
    metadata: dict[str, str] | None
    user_provided_suffix: str | None
    # tunegate: the assistant tokens among trained_tokens (the targets of the loss)
    trained_target_tokens: int | None = None
    purpose: str
    base_model: str
    parent_model: str | None
    lora: dict[str, Any]
    evaluation: dict[str, Any]
    estimate: dict[str, Any]
    compute: dict[str, Any] | None
    decisions: list[dict[str, Any]]
    created_by: str
    cancel_requested: bool
    # Suspected mislabels: lines flagged after training (None: not scored), and the lines
    # this job left out as confirmed wrong by an earlier job's review.
    suspected_mislabels_count: int | None = None
    excluded_lines: dict[str, Any] | None = None

    @classmethod
    def of(cls, job: Any) -> JobPublic:
        return cls(
            id=job.id,
            created_at=job.created_at,
            error=job.error,
            fine_tuned_model=job.fine_tuned_model,
            finished_at=job.finished_at,
            hyperparameters=job.hyperparameters,
            model=job.model,
            organization_id=job.tenant,
            result_files=job.result_files,
            seed=job.seed,
            status=job.status,
            trained_tokens=job.trained_tokens,
            training_file=job.training_file,
            validation_file=job.validation_file,
            estimated_finish=job.estimated_finish,
            integrations=job.integrations,
            trained_target_tokens=job.trained_target_tokens,
            method=method_of(job),
            metadata=job.user_metadata,
            user_provided_suffix=job.suffix,
            purpose=job.purpose,
            base_model=job.base_model,
            parent_model=job.parent_model_id,
            lora=job.lora,
            evaluation=job.evaluation,
            estimate=job.estimate,
            compute=job.compute,
            decisions=job.decisions,
            created_by=job.created_by,
            cancel_requested=job.cancel_requested,
            suspected_mislabels_count=count_of(job),
            excluded_lines=excluded_lines_of(job),
        )


def count_of(job: Any) -> int | None:
    """The lines flagged after training, from the job's compute figures."""
    figures = (getattr(job, "compute", None) or {}).get("suspected_mislabels")
    return int(figures["flagged"]) if figures else None


def excluded_lines_of(job: Any) -> dict[str, Any] | None:
    spec = getattr(job, "spec", None) or {}
    if not spec.get("exclude_lines_from"):
        return None
    return {"from_job": spec["exclude_lines_from"], "lines": list(spec.get("exclude_lines") or [])}


def method_of(job: Any) -> dict[str, Any]:
    """OpenAI's ``method`` of a job, from the spec its worker runs."""
    spec = job.spec or {}
    if spec.get("method") == "dpo":
        beta = (spec.get("dpo") or {}).get("beta", "auto")
        return {"type": "dpo", "dpo": {"hyperparameters": {**job.hyperparameters, "beta": beta}}}
    return {"type": "supervised", "supervised": {"hyperparameters": job.hyperparameters}}


class JobsPage(BaseModel):
    object: Literal["list"] = "list"
    data: list[JobPublic]
    has_more: bool


class JobEventPublic(BaseModel):
    object: Literal["fine_tuning.job.event"] = "fine_tuning.job.event"
    id: str
    created_at: int
    level: str
    message: str
    type: str
    data: dict[str, Any] | None

    @classmethod
    def of(cls, event: Any) -> JobEventPublic:
        return cls(
            id=f"ftevent-{event.seq}",
            created_at=event.created_at,
            level=event.level,
            message=event.message,
            type=event.type,
            data=event.data,
        )


class JobEventsPage(BaseModel):
    object: Literal["list"] = "list"
    data: list[JobEventPublic]
    has_more: bool


class CheckpointMetrics(BaseModel):
    """OpenAI's checkpoint metrics at the step; null where the run measured nothing there
    (validation figures exist only at a step that validated, on the whole held-out set,
    so ``full_valid_*`` equal ``valid_*``)."""

    step: int
    train_loss: float | None = None
    train_mean_token_accuracy: float | None = None
    valid_loss: float | None = None
    valid_mean_token_accuracy: float | None = None
    full_valid_loss: float | None = None
    full_valid_mean_token_accuracy: float | None = None


class JobCheckpointPublic(BaseModel):
    """OpenAI's fine_tuning.job.checkpoint; ``fine_tuned_model_checkpoint`` names the model
    it is registered as once the job has succeeded (tunegate adds the adapter's hash)."""

    object: Literal["fine_tuning.job.checkpoint"] = "fine_tuning.job.checkpoint"
    id: str
    created_at: int
    fine_tuned_model_checkpoint: str
    fine_tuning_job_id: str
    metrics: CheckpointMetrics
    step_number: int
    adapter_sha256: str

    @classmethod
    def of(cls, checkpoint: Any, *, job: Any) -> JobCheckpointPublic:
        known = CheckpointMetrics.model_fields
        metrics = {k: v for k, v in (checkpoint.metrics or {}).items() if k in known}
        return cls(
            id=checkpoint.id,
            created_at=checkpoint.created_at,
            fine_tuned_model_checkpoint=checkpoint_model_id(job, checkpoint.step),
            fine_tuning_job_id=checkpoint.job_id,
            metrics=CheckpointMetrics(**{**metrics, "step": checkpoint.step}),
            step_number=checkpoint.step,
            adapter_sha256=checkpoint.adapter_sha256,
        )


class JobCheckpointsPage(BaseModel):
    object: Literal["list"] = "list"
    data: list[JobCheckpointPublic]
    has_more: bool
    first_id: str | None = None
    last_id: str | None = None


class MislabelReview(BaseModel):
    """A data owner's verdict on a flagged line."""

    model_config = ConfigDict(extra="forbid")

    verdict: Literal["reviewed_correct", "confirmed_wrong"]
    reason: str = Field(min_length=1, max_length=1000)


class SuspectedMislabelPublic(BaseModel):
    """One training line the tuned model disagrees with: the loss outlier's robust z-score,
    why it was flagged (the field, for a structured disagreement), the label (the line's
    assistant answer) and the model's greedy answer where one was generated."""

    object: Literal["fine_tuning.job.suspected_mislabel"] = "fine_tuning.job.suspected_mislabel"
    id: str
    job_id: str
    file_id: str
    line: int
    score: float
    loss: float
    reason: str
    field: str | None
    label: str
    model_answer: str | None
    review_status: str
    reviewed_by: str | None
    reviewed_at: int | None
    review_reason: str | None

    @classmethod
    def of(cls, row: Any) -> SuspectedMislabelPublic:
        return cls(
            id=row.id,
            job_id=row.job_id,
            file_id=row.file_id,
            line=row.line,
            score=row.score,
            loss=row.loss,
            reason=row.reason,
            field=row.field,
            label=row.label,
            model_answer=row.model_answer,
            review_status=row.review_status,
            reviewed_by=row.reviewed_by,
            reviewed_at=row.reviewed_at,
            review_reason=row.review_reason,
        )


class SuspectedMislabelsPage(BaseModel):
    object: Literal["list"] = "list"
    data: list[SuspectedMislabelPublic]
    has_more: bool
    first_id: str | None = None
    last_id: str | None = None
