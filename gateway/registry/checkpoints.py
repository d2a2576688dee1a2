"""Checkpoints as models: when a job succeeds, each checkpoint it kept is registered as a
model version of its own, named ``<the job's model>:ckpt-step-<N>`` (OpenAI's
``fine_tuned_model_checkpoint``). Never commits.

A checkpoint model is a fine-tuned model like any other: a new job's ``model`` (its
adapter initialises the run), the adapter download, promotion and the dossier take its
name. It shares the lineage of the job's model (tenant, job, base manifest, data files
with their hashes, decisions, parent model, hyperparameters, seed) and differs in what is
its own: the adapter (its files re-hashed here, at registration, against the hash the run
recorded), the directory it lies in, and its step, kept in ``compute.checkpoint`` with the
checkpoint's id and metrics. It carries no evaluation report (only the job's model was
evaluated against the baselines), so its verdict is null.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlmodel import Session

from gateway.registry.models import ModelVersion
from trainer.hashing import sha256_file

ADAPTER_WEIGHTS = "adapter_model.safetensors"
# What PeftModel.from_pretrained reads: all a checkpoint model's adapter is (the optimizer
# state and best-so-far weights beside them are the resume's, not the model's).
ADAPTER_FILES = ("adapter_config.json", ADAPTER_WEIGHTS)
# What of the job's model's compute describes the run up to any of its checkpoints.
_SHARED_COMPUTE = ("device", "total_steps", "estimate", "estimated_device_seconds")


@dataclass(frozen=True)
class KeptCheckpoint:
    """A checkpoint a succeeded job kept, as its worker recorded it."""

    checkpoint_id: str
    model_id: str
    step: int
    directory: str
    adapter_sha256: str
    metrics: dict[str, Any]


def adapter_files(directory: Path) -> list[dict[str, Any]] | None:
    """The checkpoint's adapter files with their sha256 and size; None when one is gone."""
    entries = []
    for name in ADAPTER_FILES:
        path = directory / name
        if not path.is_file():
            return None
        entries.append(
            {"relative_path": name, "sha256": sha256_file(path), "bytes": path.stat().st_size}
        )
    return entries


def register(
    session: Session, *, final: ModelVersion, kept: list[KeptCheckpoint]
) -> tuple[list[ModelVersion], list[KeptCheckpoint]]:
    """Adds a model version for each kept checkpoint whose adapter on disk is the one the
    run recorded; returns (registered, refused: gone or changed since it was written)."""
    registered: list[ModelVersion] = []
    refused: list[KeptCheckpoint] = []
    for checkpoint in kept:
        files = adapter_files(Path(checkpoint.directory))
        weights = next((f for f in files or () if f["relative_path"] == ADAPTER_WEIGHTS), None)
        if weights is None or weights["sha256"] != checkpoint.adapter_sha256:
            refused.append(checkpoint)
            continue
        assert files is not None
        version = checkpoint_version(final, checkpoint=checkpoint, files=files)
        session.add(version)
        registered.append(version)
    return registered, refused


def checkpoint_version(
    final: ModelVersion, *, checkpoint: KeptCheckpoint, files: list[dict[str, Any]]
) -> ModelVersion:
    """The checkpoint as a candidate model version, in the lineage of the job's model."""
    compute = {name: final.compute.get(name) for name in _SHARED_COMPUTE}
    compute |= {
        "steps_completed": checkpoint.step,
        "checkpoint": {
            "id": checkpoint.checkpoint_id,
            "step": checkpoint.step,
            "job_model": final.id,
            "metrics": checkpoint.metrics,
        },
    }
    return ModelVersion(
        id=checkpoint.model_id,
        tenant=final.tenant,
        job_id=final.job_id,
        created_at=final.created_at,
        requested_by=final.requested_by,
        purpose=final.purpose,
        status="candidate",
        base_model=final.base_model,
        base_manifest_sha256=final.base_manifest_sha256,
        parent_model_id=final.parent_model_id,
        data_files=list(final.data_files),
        decisions=list(final.decisions),
        hyperparameters=dict(final.hyperparameters),
        seed=final.seed,
        library_versions=dict(final.library_versions),
        compute=compute,
        evaluation=None,
        verdict=None,
        adapter_files=files,
        adapter_sha256=checkpoint.adapter_sha256,
        artifact_dir=checkpoint.directory,
    )
