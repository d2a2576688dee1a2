"""How a job ends: registered, failed or cancelled, each in one transaction with its
events and audit records.

Registration re-hashes the artifacts the run reported, inside the transaction that
inserts the model version, so a file changed between training and registration fails the
job instead of entering the registry under a hash it does not have.
"""

from __future__ import annotations

import csv
import io
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog
from sqlmodel import Session, col, select

from gateway.config import Settings
from gateway.executors.audit import record_worker_event
from gateway.files.models import TrainingFile
from gateway.files.results import record_result_file
from gateway.jobs import mislabels
from gateway.jobs.events import add_event
from gateway.jobs.models import (
    FLOPS_PER_PARAMETER_TOKEN,
    LEASED_STATUSES,
    FineTuningJob,
    JobCheckpoint,
    JobEvent,
)
from gateway.jobs.naming import MODEL_ID_MAX, checkpoint_model_id, model_version_id
from gateway.registry import checkpoints as checkpoint_models
from gateway.registry.models import ModelVersion
from trainer.hashing import hash_tree

if TYPE_CHECKING:
    from trainer.results import ArtifactFile, TrainResult

log = structlog.get_logger(__name__)

__all__ = ["MODEL_ID_MAX", "model_version_id"]  # named here before gateway.jobs.naming
ADAPTER_WEIGHTS_PATH = "adapter/adapter_model.safetensors"
ERROR_MESSAGE_MAX = 1000
# OpenAI's result file columns, in its order (train_accuracy: not measured, left empty).
RESULT_COLUMNS = ("step", "train_loss", "train_accuracy", "valid_loss", "valid_mean_token_accuracy")
# Spec fields that shape what is learned, recorded next to the resolved hyperparameters.
RECORDED_SPEC_FIELDS = (
    "lora",
    "base_learning_rate",
    "lr_scheduler",
    "warmup_ratio",
    "weight_decay",
    "max_grad_norm",
    "max_seq_len",
    "micro_batch_tokens",
    "packing",
    "max_steps",
    "eval_every_steps",
    "early_stopping_patience",
    "init_adapter_dir",
)


class LeaseLost(Exception):
    """The job is no longer this worker's (its lease expired and it was taken back)."""


def now() -> int:
    return int(time.time())


def lock_job(session: Session, job_id: str) -> FineTuningJob | None:
    """The job row, locked until the transaction ends (SQLite: BEGIN IMMEDIATE already)."""
    return session.exec(
        select(FineTuningJob).where(FineTuningJob.id == job_id).with_for_update()
    ).first()


def locked_if_ours(session: Session, job_id: str, worker_id: str) -> FineTuningJob:
    """The job, locked, while ``worker_id`` holds its lease (running, or pausing)."""
    job = lock_job(session, job_id)
    if job is None or job.status not in LEASED_STATUSES or job.lease_owner != worker_id:
        raise LeaseLost(job_id)
    return job


def _finish(job: FineTuningJob, status: str) -> None:
    job.status = status
    job.finished_at = now()
    job.lease_expires_at = None
    job.estimated_finish = None


def fail_job(
    session: Session,
    *,
    job: FineTuningJob,
    code: str,
    message: str,
    param: str | None = None,
    worker_id: str | None,
    details: dict[str, Any] | None = None,
) -> None:
    """Mark a locked job failed, with its event and audit record; never commits."""
    _finish(job, "failed")
    job.error = {"code": code, "message": message[:ERROR_MESSAGE_MAX], "param": param}
    session.add(job)
    add_event(session, job_id=job.id, level="error", message=f"Job failed: {message}"[:2000])
    record_worker_event(
        session,
        tenant=job.tenant,
        action="job.failed",
        resource=f"job:{job.id}",
        details={
            "job_id": job.id,
            "code": code,
            "worker": worker_id,
            "attempt": job.attempts,
            **(details or {}),
        },
    )
    log.warning("job.failed", job_id=job.id, code=code, worker=worker_id)


def cancel_job(
    session: Session, *, job: FineTuningJob, worker_id: str | None, step: int | None
) -> None:
    """Mark a locked job cancelled; never commits. Checkpoints stay on disk, unregistered."""
    _finish(job, "cancelled")
    session.add(job)
    add_event(session, job_id=job.id, message="Job cancelled")
    record_worker_event(
        session,
        tenant=job.tenant,
        action="job.cancelled",
        resource=f"job:{job.id}",
        details={"job_id": job.id, "worker": worker_id, "step": step},
    )
    log.info("job.cancelled", job_id=job.id, worker=worker_id, step=step)


def _training_files(session: Session, job: FineTuningJob) -> list[tuple[str, TrainingFile]]:
    roles = [("training", job.training_file)]
    if job.validation_file:
        roles.append(("validation", job.validation_file))
    found = []
    for role, file_id in roles:
        row = session.get(TrainingFile, file_id)
        if row is None:
            raise LookupError(f"training file {file_id} of job {job.id} is gone")
        found.append((role, row))
    return found


def _hash_mismatches(
    artifact_dir: Path, reported: list[ArtifactFile], adapter_sha256: str | None
) -> list[str]:
    """Paths whose bytes differ from what the run reported (missing, extra or changed)."""
    actual = {f.relative_path: (f.sha256, f.bytes) for f in hash_tree(artifact_dir)}
    expected = {f.relative_path: (f.sha256, f.bytes) for f in reported}
    bad = sorted(
        path for path in actual.keys() | expected.keys() if actual.get(path) != expected.get(path)
    )
    weights = actual.get(ADAPTER_WEIGHTS_PATH)
    if weights is None or weights[0] != adapter_sha256:
        bad.append(ADAPTER_WEIGHTS_PATH)
    return sorted(set(bad))


def _data_mismatches(
    files: list[tuple[str, TrainingFile]], trained_on: list[dict[str, Any]]
) -> list[str]:
    """Roles whose trained-on bytes are not the stored content the job named."""
    hashed = {entry["role"]: entry["sha256"] for entry in trained_on}
    return [role for role, row in files if hashed.get(role) != row.content_sha256]


def _compute(job: FineTuningJob, result: TrainResult) -> dict[str, Any]:
    """What the run used, beside the estimate made before it (same FLOPs method)."""
    estimate = job.estimate or {}
    parameters = estimate.get("parameters")
    flops = FLOPS_PER_PARAMETER_TOKEN * parameters * result.processed_tokens if parameters else None
    return {
        "seconds": round(result.seconds, 3),
        "device_hours": round(result.seconds / 3600, 6),
        "flops": flops,
        "flops_per_second": round(flops / result.seconds) if flops and result.seconds else None,
        "device": result.device,
        "steps_completed": result.steps_completed,
        "total_steps": result.total_steps,
        # OpenAI's meaning (every token of the training examples, times the epochs), and
        # the assistant tokens among them (the loss's targets).
        "trained_tokens": result.processed_tokens,
        "trained_target_tokens": result.trained_tokens,
        "processed_tokens": result.processed_tokens,
        "attempts": job.attempts,
        "torch_threads": result.resolved_config.get("torch_threads"),
        "estimate": estimate,
        "estimated_device_seconds": getattr(job, "estimated_device_seconds", None),
        # A resumed run's seconds are its sessions' up to the checkpoints they resumed
        # from, and the last one's: never the time it was paused (nor work a lost worker
        # did after its last checkpoint, which the next session did again).
        "resumed": bool(job.spec.get("resume_from_checkpoint")),
        # What scoring the training set for suspected mislabels cost and found (None: off).
        "suspected_mislabels": mislabels.figures_of(result.suspected_mislabels),
    }


def _hyperparameters(result: TrainResult) -> dict[str, Any]:
    config = result.resolved_config
    spec = config["spec"]
    return {
        **config["resolved_hyperparameters"],
        **{name: spec.get(name) for name in RECORDED_SPEC_FIELDS},
        "target_modules": config.get("target_modules"),
        "trainable_parameters": config.get("trainable_parameters"),
        "schedule": config.get("schedule"),
    }


def _verdict(evaluation: dict[str, Any] | None) -> str | None:
    if not evaluation or "verdict" not in evaluation:
        return None
    return "passed" if evaluation["verdict"].get("passed") else "failed"


def complete_job(
    session: Session, *, settings: Settings, job_id: str, worker_id: str, result: TrainResult
) -> str:
    """Register a succeeded run as a candidate model version, or fail the job if its
    artifacts or data do not hash to what was reported; returns the job's new status.
    Never commits (the caller's one transaction holds it all); raises LeaseLost when the
    job is no longer this worker's, in which case nothing is written."""
    job = locked_if_ours(session, job_id, worker_id)
    if job.cancel_requested:
        # The owner asked to stop before the model existed in the registry: honour it.
        cancel_job(session, job=job, worker_id=worker_id, step=result.steps_completed)
        return "cancelled"
    artifact_dir = Path(result.artifact_dir)  # set on every succeeded run
    files: list[tuple[str, TrainingFile]] = []
    refusal = _artifact_refusal(artifact_dir, result)
    if refusal is None:
        files = _training_files(session, job)
        refusal = _data_refusal(files, result)
    if refusal is not None:
        fail_job(session, job=job, worker_id=worker_id, **refusal)
        return "failed"
    version = _register(session, job, result, files, artifact_dir)
    _record_mislabels(session, job, result)
    _record_results(session, settings, job, files)
    _register_checkpoints(session, job, version, worker_id)
    _record_success(session, job, result, files, version.id, worker_id)
    log.info("job.succeeded", job_id=job.id, model_id=version.id, worker=worker_id)
    return "succeeded"


# Why a run may not be registered: fail_job's code, message and details.
Refusal = dict[str, Any]


def _artifact_refusal(artifact_dir: Path, result: TrainResult) -> Refusal | None:
    bad_paths = _hash_mismatches(artifact_dir, result.files, result.adapter_sha256)
    if not bad_paths:
        return None
    return {
        "code": "artifact_hash_mismatch",
        "message": "the run's artifacts changed between training and registration: "
        + ", ".join(bad_paths[:10]),
        "details": {"paths": bad_paths[:20]},
    }


def _data_refusal(files: list[tuple[str, TrainingFile]], result: TrainResult) -> Refusal | None:
    erased = [role for role, row in files if row.content_deleted_at is not None]
    if erased:
        # An erasure decided while the job ran: a model trained on erased data is not
        # registered (the data subject's request wins over the finished run).
        return {
            "code": "training_data_erased",
            "message": f"the job's {' and '.join(erased)} file was erased while it ran",
            "details": {"roles": erased},
        }
    bad_roles = _data_mismatches(files, result.data_files)
    if bad_roles:
        return {
            "code": "training_data_mismatch",
            "message": "the run read data that is not the stored content of the job's "
            f"{' and '.join(bad_roles)} file",
            "details": {"roles": bad_roles},
        }
    return None


def _register(
    session: Session,
    job: FineTuningJob,
    result: TrainResult,
    files: list[tuple[str, TrainingFile]],
    artifact_dir: Path,
) -> ModelVersion:
    """The candidate model version, and the job marked succeeded."""
    adapter_files = [
        {"relative_path": f.relative_path, "sha256": f.sha256, "bytes": f.bytes}
        for f in hash_tree(artifact_dir)
    ]
    model_id = model_version_id(job)
    compute = _compute(job, result)
    version = ModelVersion(
        id=model_id,
        tenant=job.tenant,
        job_id=job.id,
        created_at=now(),
        requested_by=job.created_by,
        purpose=job.purpose,
        status="candidate",
        base_model=job.base_model,
        base_manifest_sha256=result.base_model_sha256,
        parent_model_id=job.parent_model_id,
        data_files=[
            {
                "role": role,
                "file_id": row.id,
                "data_source": row.data_source_id,
                "sha256": row.sha256,
                "content_sha256": row.content_sha256,
                "redaction": row.redaction,
                **_exclusion(job, role),
            }
            for role, row in files
        ],
        decisions=list(job.decisions),
        hyperparameters=_hyperparameters(result),
        seed=job.seed,
        library_versions=result.resolved_config["library_versions"],
        compute=compute,
        evaluation=result.evaluation,
        verdict=_verdict(result.evaluation),
        adapter_files=adapter_files,
        adapter_sha256=result.adapter_sha256,
        artifact_dir=str(artifact_dir),
    )
    session.add(version)
    _finish(job, "succeeded")
    job.fine_tuned_model = model_id
    job.trained_tokens = result.processed_tokens
    job.trained_target_tokens = result.trained_tokens
    job.compute = compute
    session.add(job)
    return version


def _exclusion(job: FineTuningJob, role: str) -> dict[str, Any]:
    """The lineage of lines left out of the training file (exclude_lines_from)."""
    spec = job.spec or {}
    if role != "training" or not spec.get("exclude_lines_from"):
        return {}
    return {
        "excluded_lines": list(spec.get("exclude_lines") or []),
        "excluded_lines_from": spec["exclude_lines_from"],
    }


def _record_mislabels(session: Session, job: FineTuningJob, result: TrainResult) -> None:
    """The flagged training lines, and the evaluation "with / without" the confirmed-wrong
    lines when this job left an earlier job's out (gateway.jobs.mislabels)."""
    flagged = mislabels.record_suspects(session, job=job, report=result.suspected_mislabels)
    if result.suspected_mislabels is not None:
        add_event(
            session,
            job_id=job.id,
            message=f"Suspected mislabels: {flagged} training line(s) flagged for review",
            data={"suspected_mislabels": flagged},
        )
    comparison = mislabels.cleaning_comparison(session, job=job, evaluation=result.evaluation)
    if comparison is not None and result.evaluation is not None:
        result.evaluation = {**result.evaluation, "cleaning": comparison}
        version = session.get(ModelVersion, job.fine_tuned_model)
        if version is not None:
            version.evaluation = result.evaluation
            session.add(version)


def results_csv(session: Session, job_id: str) -> tuple[bytes, int]:
    """OpenAI's step metrics CSV from the job's metrics events, one row a step (a step
    run again after a resume: its last run's figures); returns the bytes and the rows."""
    steps: dict[int, dict[str, Any]] = {}
    events = session.exec(
        select(JobEvent)
        .where(JobEvent.job_id == job_id, JobEvent.type == "metrics")
        .order_by(col(JobEvent.seq))
    ).all()
    for event in events:
        data = event.data or {}
        step = data.get("step")
        if not isinstance(step, int) or not ("train_loss" in data or "valid_loss" in data):
            continue
        row = steps.setdefault(step, {"step": step})
        for name in RESULT_COLUMNS[1:]:
            if name in data:
                row[name] = data[name]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=RESULT_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for step in sorted(steps):
        writer.writerow({name: _cell(steps[step].get(name)) for name in RESULT_COLUMNS})
    return out.getvalue().encode(), len(steps)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def _record_results(
    session: Session, settings: Settings, job: FineTuningJob, files: list[tuple[str, TrainingFile]]
) -> None:
    """The job's result file: its metrics CSV, stored as a file its readers may read."""
    content, rows = results_csv(session, job.id)
    training = next(row for role, row in files if role == "training")
    row = record_result_file(
        session,
        settings=settings,
        training=training,
        job_id=job.id,
        created_by=job.created_by,
        content=content,
        rows=rows,
    )
    job.result_files = [row.id]
    session.add(job)


def _record_success(
    session: Session,
    job: FineTuningJob,
    result: TrainResult,
    files: list[tuple[str, TrainingFile]],
    model_id: str,
    worker_id: str,
) -> None:
    """The job's closing events, and the audit records of its success and the new model."""
    add_event(session, job_id=job.id, message=f"New fine-tuned model created: {model_id}")
    add_event(session, job_id=job.id, message="The job has successfully completed")
    record_worker_event(
        session,
        tenant=job.tenant,
        action="job.succeeded",
        resource=f"job:{job.id}",
        details={
            "job_id": job.id,
            "model_id": model_id,
            "worker": worker_id,
            "attempt": job.attempts,
        },
    )
    record_worker_event(
        session,
        tenant=job.tenant,
        action="model.registered",
        resource=f"model:{model_id}",
        details={
            "model_id": model_id,
            "job_id": job.id,
            "adapter_sha256": result.adapter_sha256,
            "base_manifest_sha256": result.base_model_sha256,
            "data_files": [
                {"file_id": row.id, "content_sha256": row.content_sha256} for _, row in files
            ],
            "parent_model_id": job.parent_model_id,
        },
    )


def _register_checkpoints(
    session: Session, job: FineTuningJob, version: ModelVersion, worker_id: str
) -> None:
    """The checkpoints the job kept become models of their own, each audited; one whose
    adapter changed (or is gone) since the run recorded it is left out, with a warning."""
    rows = session.exec(
        select(JobCheckpoint)
        .where(JobCheckpoint.job_id == job.id)
        .order_by(col(JobCheckpoint.step))
    ).all()
    kept = [
        checkpoint_models.KeptCheckpoint(
            checkpoint_id=row.id,
            model_id=checkpoint_model_id(job, row.step),
            step=row.step,
            directory=row.path,
            adapter_sha256=row.adapter_sha256,
            metrics=row.metrics,
        )
        for row in rows
    ]
    registered, refused = checkpoint_models.register(session, final=version, kept=kept)
    for checkpoint in refused:
        add_event(
            session,
            job_id=job.id,
            level="warn",
            message=f"Checkpoint at step {checkpoint.step} not registered: its adapter "
            "changed or is gone since it was written",
        )
        log.warning("job.checkpoint_not_registered", job_id=job.id, step=checkpoint.step)
    for checkpoint_version in registered:
        record_worker_event(
            session,
            tenant=job.tenant,
            action="model.registered",
            resource=f"model:{checkpoint_version.id}",
            details={
                "model_id": checkpoint_version.id,
                "job_id": job.id,
                "checkpoint_id": checkpoint_version.compute["checkpoint"]["id"],
                "checkpoint_step": checkpoint_version.compute["checkpoint"]["step"],
                "worker": worker_id,
                "adapter_sha256": checkpoint_version.adapter_sha256,
                "base_manifest_sha256": checkpoint_version.base_manifest_sha256,
                "parent_model_id": checkpoint_version.parent_model_id,
            },
        )
    if registered:
        names = ", ".join(v.id.rsplit(":", 1)[-1] for v in registered)
        add_event(session, job_id=job.id, message=f"Checkpoint models registered: {names}")
