"""The worker's side of a running job: trainer events become OpenAI job events and
checkpoint rows, written in batches by a background thread that also renews the lease and
watches the cancel flag and the job's status (``pausing`` asks the run to pause). Events
are matched on their class (trainer.results, plain dataclasses that import no torch).

The training thread only appends to a list; one transaction a tick (about a second) writes
whatever came in, renews the lease when due, and reads `cancel_requested` and the status,
so a run of fast steps costs one commit a second, not one a step.

A job keeps its newest ``keep_checkpoints`` checkpoints: the transaction that records a
new one deletes the rows of those it pushes out, and their directories go once it has
committed (the newest, the one a resume starts from, is never among them).
"""

from __future__ import annotations

import math
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from gateway.db import read_only
from gateway.executors.completion import LeaseLost, locked_if_ours
from gateway.jobs.events import add_event
from gateway.jobs.models import FineTuningJob, JobCheckpoint
from trainer.results import (
    CheckpointEvent,
    EarlyStoppedEvent,
    EpochEvent,
    EvaluationEvent,
    RunCancelledEvent,
    RunPausedEvent,
    RunStartedEvent,
    RunSucceededEvent,
    StepEvent,
    TrainEvent,
    ValidationEvent,
)

log = structlog.get_logger(__name__)

MAX_TICK_SECONDS = 1.0
DEFAULT_KEEP_CHECKPOINTS = 3
# OpenAI's checkpoint metrics, in its order; each null where the run measured nothing.
CHECKPOINT_METRICS = (
    "train_loss",
    "train_mean_token_accuracy",
    "valid_loss",
    "valid_mean_token_accuracy",
    "full_valid_loss",
    "full_valid_mean_token_accuracy",
)


def _finite(value: Any) -> Any:
    """JSON columns refuse NaN on PostgreSQL; a diverged loss is recorded as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _clean(data: dict[str, Any]) -> dict[str, Any]:
    return {key: _finite(value) for key, value in data.items()}


@dataclass(frozen=True)
class Pending:
    at: int
    level: str
    type: str
    message: str
    data: dict[str, Any] | None
    checkpoint: dict[str, Any] | None = None


def translate(event: TrainEvent, latest: dict[str, Any]) -> Pending:
    """One trainer event as an OpenAI job event; ``latest`` carries the newest losses
    into checkpoint metrics."""
    at = int(time.time())
    match event:
        case StepEvent():
            return _step(event, at, latest)
        case ValidationEvent():
            return _validation(event, at, latest)
        case CheckpointEvent():
            return _checkpoint(event, at, latest)
        case RunStartedEvent():
            return _started(event, at)
        case EpochEvent(epoch=epoch):
            return Pending(at, "info", "message", f"Epoch {epoch} completed", {"step": event.step})
        case EarlyStoppedEvent(best_step=best_step):
            return Pending(
                at,
                "info",
                "message",
                f"Stopped early at step {event.step}; best step {best_step}",
                {"step": event.step, "best_step": best_step},
            )
        case EvaluationEvent():
            return _evaluation(event, at)
        case RunCancelledEvent():
            message = f"Training stopped at step {event.step}"
            return Pending(at, "info", "message", message, {"step": event.step})
        case RunPausedEvent():
            message = f"Training paused at step {event.step}"
            return Pending(at, "info", "message", message, {"step": event.step})
        case RunSucceededEvent():
            return Pending(
                at,
                "info",
                "message",
                "Training finished; verifying the artifacts",
                {"step": event.step, "adapter_sha256": event.adapter_sha256},
            )
        case _:
            return Pending(at, "info", "message", event.type, {"step": event.step})


def _step(event: StepEvent, at: int, latest: dict[str, Any]) -> Pending:
    latest["train_loss"] = _finite(event.loss)
    metrics = _clean(
        {
            "step": event.step,
            "total_steps": event.total_steps,
            "train_loss": event.loss,
            "learning_rate": event.learning_rate,
            "grad_norm": event.grad_norm,
            "epoch": event.epoch,
            "tokens_per_second": event.tokens_per_second,
            "trained_tokens": event.processed_tokens,
            "trained_target_tokens": event.trained_tokens,
        }
    )
    loss = "nan" if metrics["train_loss"] is None else f"{event.loss:.4f}"
    message = f"Step {event.step}/{event.total_steps}: training loss={loss}"
    return Pending(at, "info", "metrics", message, metrics)


def _validation(event: ValidationEvent, at: int, latest: dict[str, Any]) -> Pending:
    latest["valid_loss"] = _finite(event.validation_loss)
    metrics = _clean(
        {
            "step": event.step,
            "valid_loss": event.validation_loss,
            "valid_mean_token_accuracy": event.validation_accuracy,
            "best_valid_loss": event.best_validation_loss,
            "improved": event.improved,
        }
    )
    loss = "nan" if metrics["valid_loss"] is None else f"{event.validation_loss:.4f}"
    return Pending(at, "info", "metrics", f"Step {event.step}: validation loss={loss}", metrics)


def _checkpoint(event: CheckpointEvent, at: int, latest: dict[str, Any]) -> Pending:
    """The checkpoint's row, with the metrics the trainer measured at its step (a trainer
    that sends none gets the newest losses it reported)."""
    step = event.step
    measured = event.metrics or {
        "train_loss": latest.get("train_loss"),
        "valid_loss": latest.get("valid_loss"),
    }
    checkpoint = {
        "step": step,
        "path": event.path,
        "adapter_sha256": event.adapter_sha256,
        "metrics": {"step": step, **{name: measured.get(name) for name in CHECKPOINT_METRICS}},
    }
    return Pending(
        at,
        "info",
        "message",
        f"Checkpoint created at step {step}",
        {"step": step, "adapter_sha256": event.adapter_sha256},
        checkpoint,
    )


def _started(event: RunStartedEvent, at: int) -> Pending:
    step = event.step
    verb = f"resumed at step {step} of" if step else "started:"
    return Pending(
        at,
        "info",
        "message",
        f"Training {verb} {event.total_steps} steps on {event.device}",
        {
            "step": step,
            "total_steps": event.total_steps,
            "device": event.device,
            "train_examples": event.train_examples,
            "held_out_examples": event.held_out_examples,
        },
    )


def _evaluation(event: EvaluationEvent, at: int) -> Pending:
    verdict, probe = event.verdict, event.ood_probe
    return Pending(
        at,
        "info",
        "metrics",
        f"Evaluation: verdict {'passed' if verdict.get('passed') else 'failed'}",
        {
            "step": event.step,
            "systems": event.systems,
            "verdict": verdict,
            "ood_probe": _clean(
                {k: probe.get(k) for k in ("loss_before", "loss_after", "relative_change")}
            ),
        },
    )


class JobMonitor:
    """Background writer, lease heartbeat, stop and pause signals for one running job."""

    def __init__(
        self,
        engine: Engine,
        *,
        job_id: str,
        worker_id: str,
        lease_seconds: float,
        heartbeat_seconds: float,
        shutdown: Callable[[], bool] | None = None,
        keep_checkpoints: int = DEFAULT_KEEP_CHECKPOINTS,
    ) -> None:
        self.engine, self.job_id, self.worker_id = engine, job_id, worker_id
        self.lease_seconds, self.heartbeat_seconds = lease_seconds, heartbeat_seconds
        self.keep_checkpoints = keep_checkpoints
        self.tick_seconds = min(MAX_TICK_SECONDS, heartbeat_seconds)
        self._shutdown = shutdown or (lambda: False)
        self._lock = threading.Lock()
        self._pending: list[Pending] = []
        self._latest: dict[str, Any] = {}
        self._progress: dict[str, Any] = {}
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"job-{job_id}", daemon=True)
        self._last_renewal = time.monotonic()
        self.stop_reason: str | None = None  # cancelled | lease_lost | shutdown
        self._pausing = False  # the job's status is `pausing`: the run pauses between steps

    # --- the training thread's side

    def on_event(self, event: TrainEvent) -> None:
        pending = translate(event, self._latest)
        with self._lock:
            self._pending.append(pending)
            if isinstance(event, StepEvent):
                self._progress = {
                    "trained_tokens": event.processed_tokens,
                    "trained_target_tokens": event.trained_tokens,
                    "estimated_finish": int(time.time() + event.seconds_remaining),
                }

    def should_stop(self) -> bool:
        return self.stop_reason is not None

    def should_pause(self) -> bool:
        return self._pausing

    @property
    def lease_lost(self) -> bool:
        return self.stop_reason == "lease_lost"

    # --- the background side

    def start(self) -> JobMonitor:
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop the thread and write what is left (raises LeaseLost if no longer ours)."""
        self._closed.set()
        self._thread.join()
        if not self.lease_lost:
            self.tick(force=True)

    def _loop(self) -> None:
        while not self._closed.wait(self.tick_seconds):
            try:
                self.tick()
            except LeaseLost:
                self._stop("lease_lost")
                log.warning("job.lease_lost", job_id=self.job_id, worker=self.worker_id)
                return
            except Exception:
                # A database hiccup: try again next tick, until the lease would lapse.
                log.exception("job.monitor_tick_failed", job_id=self.job_id)
                if time.monotonic() - self._last_renewal > self.lease_seconds:
                    self._stop("lease_lost")
                    return
            if self._shutdown():
                self._stop("shutdown")

    def _read_flags(self) -> None:
        with Session(read_only(self.engine)) as session:
            row = session.exec(
                select(FineTuningJob.cancel_requested, FineTuningJob.status).where(
                    FineTuningJob.id == self.job_id
                )
            ).first()
        if row is None:
            return
        cancel, status = row
        self._pausing = status == "pausing"
        if cancel:
            self._stop("cancelled")

    def _stop(self, reason: str) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason

    def tick(self, *, force: bool = False) -> None:
        with self._lock:
            pending, self._pending = self._pending, []
            progress, self._progress = self._progress, {}
        due = time.monotonic() - self._last_renewal >= self.heartbeat_seconds
        if not (pending or progress or due or force):
            self._read_flags()
            return
        try:
            with Session(self.engine) as session:
                job = locked_if_ours(session, self.job_id, self.worker_id)
                pruned = self._write(session, pending)
                if progress:
                    job.trained_tokens = progress["trained_tokens"]
                    job.trained_target_tokens = progress["trained_target_tokens"]
                    job.estimated_finish = progress["estimated_finish"]
                renewed = time.monotonic()
                job.lease_expires_at = time.time() + self.lease_seconds
                cancel, self._pausing = job.cancel_requested, job.status == "pausing"
                session.add(job)
                session.commit()
        except BaseException:
            with self._lock:
                self._pending[:0] = pending
                self._progress = self._progress or progress
            raise
        self._last_renewal = renewed
        for path in pruned:
            shutil.rmtree(path, ignore_errors=True)
        if cancel:
            self._stop("cancelled")

    def _write(self, session: Session, pending: list[Pending]) -> list[str]:
        """The events and checkpoint rows; returns the directories of the checkpoints the
        new ones pushed out (their rows deleted here, their files once this commits)."""
        wrote_checkpoint = False
        for item in pending:
            add_event(
                session,
                job_id=self.job_id,
                message=item.message,
                level=item.level,
                type=item.type,
                data=item.data,
                at=item.at,
            )
            if item.checkpoint is not None:
                wrote_checkpoint = True
                session.add(
                    JobCheckpoint(
                        id=f"ftckpt-{uuid.uuid4().hex[:24]}",
                        job_id=self.job_id,
                        created_at=item.at,
                        step=item.checkpoint["step"],
                        metrics=_clean(item.checkpoint["metrics"]),
                        adapter_sha256=item.checkpoint["adapter_sha256"],
                        path=item.checkpoint["path"],
                    )
                )
        if not wrote_checkpoint:
            return []
        session.flush()
        older = session.exec(
            select(JobCheckpoint)
            .where(JobCheckpoint.job_id == self.job_id)
            .order_by(col(JobCheckpoint.step).desc(), col(JobCheckpoint.created_at).desc())
            .offset(self.keep_checkpoints)
        ).all()
        kept_paths = {
            path
            for path in session.exec(
                select(JobCheckpoint.path)
                .where(JobCheckpoint.job_id == self.job_id)
                .order_by(col(JobCheckpoint.step).desc(), col(JobCheckpoint.created_at).desc())
                .limit(self.keep_checkpoints)
            ).all()
        }
        for row in older:
            session.delete(row)
        return [row.path for row in older if row.path not in kept_paths]
