"""What a run reports: events while it runs, and a TrainResult when it ends."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass(frozen=True)
class TrainEvent:
    """One thing that happened in a run; `type` is a dotted event name, `data` plain JSON."""

    type: str
    step: int
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


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
    status: Literal["succeeded", "cancelled"]
    steps_completed: int
    total_steps: int
    base_model_sha256: str
    data_files: list[dict[str, Any]]
    resolved_config: dict[str, Any]
    trained_tokens: int
    processed_tokens: int
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

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
