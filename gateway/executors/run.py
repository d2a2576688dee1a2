"""Running one claimed job: the same code under a local worker and inside a Ray task.

    outcome = run_job(settings, job_id, worker_id)

The job must already be claimed by ``worker_id`` (leases.claim). The trainer runs in this
thread; a JobMonitor writes its events, renews the lease, turns a committed cancel flag
into ``should_stop`` and a ``pausing`` status into ``should_pause``. Completion
(registration, failure, or the pause: the job ``paused`` with its newest checkpoint to
resume from, the worker free for the next job) is one transaction that first checks the
lease is still ours, so a worker that lost its job writes nothing final.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import structlog
from sqlalchemy import Engine
from sqlmodel import Session, select

from gateway.config import Settings
from gateway.db import make_engine, read_only
from gateway.executors.completion import (
    LeaseLost,
    cancel_job,
    complete_job,
    fail_job,
    locked_if_ours,
)
from gateway.executors.leases import pause_job, requeue
from gateway.executors.monitor import JobMonitor
from gateway.jobs.models import LEASED_STATUSES, FineTuningJob, JobCheckpoint
from gateway.registry.models import ModelVersion
from trainer.hashing import sha256_file
from trainer.spec import TrainSpec

if TYPE_CHECKING:
    from trainer.results import TrainEvent, TrainResult

log = structlog.get_logger(__name__)

# What a run that ends in an exception tells the job's owner (the log keeps the detail).
_ERROR_CODES = {
    "ManifestError": ("base_model_invalid", "the base model's files do not match its manifest"),
    "DataFileError": ("invalid_training_file", None),
    "AdapterMismatchError": ("parent_adapter_mismatch", None),
    "OutOfMemoryError": ("out_of_memory", "the run ran out of device memory"),
}


class Train(Protocol):
    """What runs the recipe for a job: ``trainer.recipe.train`` or one of its stand-ins."""

    def __call__(
        self,
        spec: TrainSpec,
        on_event: Callable[[TrainEvent], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
        should_pause: Callable[[], bool] | None = None,
    ) -> TrainResult: ...


class JobRefused(Exception):
    """A check before training failed; the job fails with this code."""

    def __init__(self, code: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.param = code, message, param


def run_job(
    settings: Settings,
    job_id: str,
    worker_id: str,
    *,
    engine: Engine | None = None,
    shutdown: Callable[[], bool] | None = None,
    train: Train | None = None,
) -> str:
    """Run a claimed job to its end; returns succeeded | failed | cancelled | paused |
    queued (handed back at shutdown) | lease_lost (someone else decides). ``train`` runs the recipe
    (default: ``trainer.recipe.train`` in this process; the Ray executor passes one that
    runs it on Ray Train workers)."""
    own_engine = engine is None
    engine = engine or make_engine(settings.database_url)
    try:
        return _run(settings, engine, job_id, worker_id, shutdown, train)
    finally:
        if own_engine:
            engine.dispose()


def _run(
    settings: Settings,
    engine: Engine,
    job_id: str,
    worker_id: str,
    shutdown: Callable[[], bool] | None,
    train: Train | None,
) -> str:
    # Here, not at the top: the recipe loads torch, which only a running job should pay for.
    from trainer import recipe

    train = train or recipe.train

    refused: JobRefused | None = None
    with Session(read_only(engine)) as session:
        job = session.get(FineTuningJob, job_id)
        if job is None or job.status not in LEASED_STATUSES or job.lease_owner != worker_id:
            return "lease_lost"
        try:
            spec = TrainSpec.from_dict(job.spec)
            _check_before_training(session, job, spec)
        except (TypeError, ValueError) as exc:
            refused = JobRefused("invalid_spec", str(exc))
        except JobRefused as exc:
            refused = exc
    if refused is not None:
        return _fail(engine, job_id, worker_id, refused.code, refused.message, refused.param)

    _set_aside_unregistered_artifacts(Path(spec.output_dir))
    monitor = JobMonitor(
        engine,
        job_id=job_id,
        worker_id=worker_id,
        lease_seconds=settings.lease_seconds,
        heartbeat_seconds=settings.heartbeat_seconds,
        shutdown=shutdown,
        keep_checkpoints=settings.checkpoint_keep,
    ).start()
    log.info("job.running", job_id=job_id, worker=worker_id)
    try:
        result = train(
            spec,
            on_event=monitor.on_event,
            should_stop=monitor.should_stop,
            should_pause=monitor.should_pause,
        )
    except Exception as exc:
        if not _close(monitor):
            return "lease_lost"
        code, message = _describe(exc)
        log.error("job.run_failed", job_id=job_id, error_type=type(exc).__name__, exc_info=True)
        return _fail(engine, job_id, worker_id, code, message)
    if not _close(monitor):
        return "lease_lost"

    return _record(settings, engine, job_id, worker_id, monitor, result)


def _record(
    settings: Settings,
    engine: Engine,
    job_id: str,
    worker_id: str,
    monitor: JobMonitor,
    result: TrainResult,
) -> str:
    """What the run ended with, in one transaction: stopped, paused, or registered."""
    try:
        with Session(engine) as session:
            if result.status == "cancelled":
                outcome = _stopped(session, job_id, worker_id, monitor.stop_reason, result)
            elif result.status == "paused":
                outcome = _paused(session, job_id, worker_id, result)
            else:
                outcome = complete_job(
                    session, settings=settings, job_id=job_id, worker_id=worker_id, result=result
                )
            session.commit()
    except LeaseLost:
        log.warning("job.lease_lost_at_completion", job_id=job_id, worker=worker_id)
        return "lease_lost"
    except Exception as exc:
        log.error(
            "job.completion_failed", job_id=job_id, error_type=type(exc).__name__, exc_info=True
        )
        return _fail(
            engine,
            job_id,
            worker_id,
            "registration_failed",
            f"the run finished but could not be registered ({type(exc).__name__})",
        )
    return outcome


def _close(monitor: JobMonitor) -> bool:
    """Flush the last events; False when the job is no longer this worker's."""
    try:
        monitor.close()
    except LeaseLost:
        return False
    return not monitor.lease_lost


def _paused(session: Session, job_id: str, worker_id: str, result: TrainResult) -> str:
    """The run stopped on a step boundary after its checkpoint: the job waits, paused, for
    a resume (a cancel asked for meanwhile wins)."""
    job = locked_if_ours(session, job_id, worker_id)
    if job.cancel_requested:
        cancel_job(session, job=job, worker_id=worker_id, step=result.steps_completed)
        return "cancelled"
    pause_job(session, job=job, worker_id=worker_id, step=result.steps_completed)
    return "paused"


def _stopped(
    session: Session, job_id: str, worker_id: str, reason: str | None, result: TrainResult
) -> str:
    job = locked_if_ours(session, job_id, worker_id)
    if reason == "shutdown" and not job.cancel_requested and job.status == "pausing":
        # Asked to pause and stopped by the shutdown: paused, from its newest checkpoint.
        pause_job(session, job=job, worker_id=worker_id, step=result.steps_completed)
        return "paused"
    if reason == "shutdown" and not job.cancel_requested:
        # Queued again (from its newest checkpoint, or to start over when it has none) on
        # the next worker: a shutdown uses up no attempt.
        if not requeue(session, job=job, reason="worker_shutdown", worker_id=worker_id):
            job.status, job.lease_owner, job.lease_expires_at = "queued", None, None
        job.attempts = max(0, job.attempts - 1)
        session.add(job)
        return "queued"
    cancel_job(session, job=job, worker_id=worker_id, step=result.steps_completed)
    return "cancelled"


def _fail(
    engine: Engine,
    job_id: str,
    worker_id: str,
    code: str,
    message: str,
    param: str | None = None,
) -> str:
    try:
        with Session(engine) as session:
            job = locked_if_ours(session, job_id, worker_id)
            fail_job(session, job=job, code=code, message=message, param=param, worker_id=worker_id)
            session.commit()
    except LeaseLost:
        return "lease_lost"
    return "failed"


def _describe(exc: Exception) -> tuple[str, str]:
    code, message = _ERROR_CODES.get(type(exc).__name__, ("training_error", None))
    if message is None:
        message = (
            str(exc) if code != "training_error" else f"training failed ({type(exc).__name__})"
        )
    return code, message


def _check_before_training(session: Session, job: FineTuningJob, spec: TrainSpec) -> None:
    """Lineage checks a run cannot make itself: a resumed checkpoint and a parent adapter
    must be the bytes the database recorded for them."""
    # Here, not at the top: trainer.checkpoints loads torch.
    from trainer.checkpoints import ADAPTER_WEIGHTS

    if spec.resume_from_checkpoint:
        path = spec.resume_from_checkpoint
        row = session.exec(
            select(JobCheckpoint).where(JobCheckpoint.job_id == job.id, JobCheckpoint.path == path)
        ).first()
        weights = Path(path) / ADAPTER_WEIGHTS
        if row is None or not weights.is_file() or sha256_file(weights) != row.adapter_sha256:
            raise JobRefused(
                "checkpoint_hash_mismatch",
                "the checkpoint to resume from is not the one this job recorded",
            )
    if spec.init_adapter_dir:
        parent = session.get(ModelVersion, job.parent_model_id) if job.parent_model_id else None
        if parent is None:
            raise JobRefused(
                "parent_model_missing",
                "init_adapter_dir is set but the job names no registered parent model",
                "model",
            )
        directory = Path(spec.init_adapter_dir)
        weights = directory / ADAPTER_WEIGHTS
        if not weights.is_file():
            weights = directory / "adapter" / ADAPTER_WEIGHTS
        if not weights.is_file() or sha256_file(weights) != parent.adapter_sha256:
            raise JobRefused(
                "parent_adapter_hash_mismatch",
                f"the adapter of {parent.id} on disk no longer matches its registered hash",
                "model",
            )


def _set_aside_unregistered_artifacts(output_dir: Path) -> None:
    """An earlier attempt may have written final artifacts and died before registering
    them; they were never registered, so the new attempt writes its own beside them."""
    # Here, not at the top: trainer.recipe loads torch.
    from trainer.recipe import ARTIFACT_DIR_NAME

    stale = output_dir / ARTIFACT_DIR_NAME
    if stale.exists():
        aside = output_dir / f".{ARTIFACT_DIR_NAME}.unregistered-{int(time.time())}-{os.getpid()}"
        stale.rename(aside)
        log.warning("job.stale_artifacts_set_aside", path=str(aside))
