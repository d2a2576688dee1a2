"""What a run reports: events while it runs, and a TrainResult when it ends.

One frozen dataclass per kind of event, so a consumer matches on the class and reads typed
fields. Everything here is plain data that pickles (events and results cross process
boundaries: worker processes, Ray tasks and Ray Train workers), and this module imports no
torch, so the gateway can match on these classes without loading it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal


@dataclass(frozen=True)
class TrainEvent:
    """One thing that happened in a run, at optimizer step `step` (0 before the first)."""

    # The event's dotted name, for logs and for consumers that only print events.
    type: ClassVar[str] = "train.event"

    step: int

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        return {"type": self.type, "step": data.pop("step"), "data": data}


@dataclass(frozen=True)
class RunStartedEvent(TrainEvent):
    """Setup is done; `step` is above 0 when the run resumed from a checkpoint."""

    type: ClassVar[str] = "run.started"

    total_steps: int
    device: str
    train_examples: int
    held_out_examples: int
    resolved_hyperparameters: dict[str, Any]
    world_size: int | None = None  # data-parallel runs only


@dataclass(frozen=True)
class StepEvent(TrainEvent):
    """An optimizer step finished."""

    type: ClassVar[str] = "train.step"

    total_steps: int
    epoch: float
    loss: float
    learning_rate: float
    grad_norm: float
    tokens_per_second: float
    step_tokens: int
    trained_tokens: int
    processed_tokens: int
    seconds_remaining: float
    estimated_finish: str  # ISO 8601, UTC


@dataclass(frozen=True)
class EpochEvent(TrainEvent):
    type: ClassVar[str] = "train.epoch_completed"

    epoch: int


@dataclass(frozen=True)
class ValidationEvent(TrainEvent):
    type: ClassVar[str] = "train.validation"

    validation_loss: float
    best_validation_loss: float | None
    improved: bool
    # Share of the held-out target tokens the model predicts (argmax); rank 0 only.
    validation_accuracy: float | None = None


@dataclass(frozen=True)
class CheckpointEvent(TrainEvent):
    type: ClassVar[str] = "checkpoint.written"

    path: str
    adapter_sha256: str
    # OpenAI's checkpoint metrics (train_loss, train_mean_token_accuracy, valid_loss, ...),
    # null where the run measured nothing at this step: see recipe.checkpoint_metrics.
    metrics: dict[str, float | None] = field(default_factory=dict)


@dataclass(frozen=True)
class EarlyStoppedEvent(TrainEvent):
    type: ClassVar[str] = "train.early_stopped"

    best_step: int | None


@dataclass(frozen=True)
class EvaluationEvent(TrainEvent):
    """The evaluation report's headline parts (the whole report is in the TrainResult)."""

    type: ClassVar[str] = "evaluation.completed"

    systems: dict[str, Any]
    ood_probe: dict[str, Any]
    verdict: dict[str, Any]


@dataclass(frozen=True)
class RunCancelledEvent(TrainEvent):
    type: ClassVar[str] = "run.cancelled"


@dataclass(frozen=True)
class RunPausedEvent(TrainEvent):
    """should_pause() said so: the run stopped at a step boundary, after the checkpoint it
    resumes from (written then, unless that step already had one)."""

    type: ClassVar[str] = "run.paused"


@dataclass(frozen=True)
class RunSucceededEvent(TrainEvent):
    type: ClassVar[str] = "run.succeeded"

    adapter_sha256: str | None
    artifact_dir: str | None
    files: int


@dataclass(frozen=True)
class ArtifactFile:
    relative_path: str
    sha256: str
    bytes: int


@dataclass(frozen=True)
class CheckpointInfo:
    step: int
    path: str
    adapter_sha256: str


@dataclass
class TrainResult:
    status: Literal["succeeded", "cancelled", "paused"]
    steps_completed: int
    total_steps: int
    base_model_sha256: str
    data_files: list[dict[str, Any]]
    resolved_config: dict[str, Any]
    trained_tokens: int
    processed_tokens: int
    # Wall-clock seconds of the run: a resumed run adds the seconds its earlier sessions
    # had run up to the checkpoint it resumed from (never the time it spent paused).
    seconds: float
    device: str
    checkpoints: list[CheckpointInfo]
    artifact_dir: str | None = None
    adapter_sha256: str | None = None
    files: list[ArtifactFile] = field(default_factory=list)
    final_train_loss: float | None = None
    best_validation_loss: float | None = None
    best_step: int | None = None
    stopped_early: bool = False
    evaluation: dict[str, Any] | None = None
    merged_check: dict[str, Any] | None = None
    # trainer.mislabels' report: its figures (cost) and the flagged training lines.
    suspected_mislabels: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
