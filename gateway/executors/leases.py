"""Who runs which job: a lease in the job row, taken by a claim, renewed by the running
worker's heartbeat, and taken back when it expires.

A worker that dies (kill -9, a lost machine) stops renewing; once its lease has expired the
next reaper (every worker reaps before it claims) re-queues the job to resume from its last
checkpoint while attempts remain, or fails it with ``worker_lost``; a job that was being
paused is paused instead (resumed, it starts from that checkpoint). Either way nothing the
dead worker wrote is registered: registration checks the lease in its own transaction.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import structlog
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from gateway.executors.audit import record_worker_event
from gateway.executors.completion import cancel_job, fail_job
from gateway.jobs.events import add_event
from gateway.jobs.models import LEASED_STATUSES, FineTuningJob, JobCheckpoint

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Claimed:
    job_id: str
    attempt: int


def claim(
    engine: Engine,
    *,
    worker_id: str,
    lease_seconds: float,
    executor: str = "local",
    job_id: str | None = None,
) -> Claimed | None:
    """Take the oldest queued job (or ``job_id``) for ``worker_id``; None when there is
    none. A queued job whose cancel was asked for is closed here instead of run."""
    while True:
        with Session(engine) as session:
            query = select(FineTuningJob).where(
                FineTuningJob.status == "queued", FineTuningJob.executor == executor
            )
            if job_id is not None:
                query = query.where(FineTuningJob.id == job_id)
            # SKIP LOCKED lets PostgreSQL workers pass each other; SQLite's BEGIN IMMEDIATE
            # already serialises them.
            job = session.exec(
                query.order_by(FineTuningJob.created_ns, FineTuningJob.id)
                .limit(1)
                .with_for_update(skip_locked=True)
            ).first()
            if job is None:
                return None
            if job.cancel_requested:
                cancel_job(session, job=job, worker_id=worker_id, step=None)
                session.commit()
                continue
            job.status = "running"
            job.lease_owner = worker_id
            job.lease_expires_at = time.time() + lease_seconds
            job.attempts += 1
            resume = job.spec.get("resume_from_checkpoint")
            add_event(
                session,
                job_id=job.id,
                message=(
                    f"Job resumed from checkpoint (attempt {job.attempts})"
                    if resume
                    else "Fine-tuning job started"
                ),
            )
            session.add(job)
            claimed = Claimed(job_id=job.id, attempt=job.attempts)
            session.commit()
            log.info(
                "job.claimed", job_id=claimed.job_id, worker=worker_id, attempt=claimed.attempt
            )
            return claimed


def latest_checkpoint(session: Session, job_id: str) -> JobCheckpoint | None:
    return session.exec(
        select(JobCheckpoint)
        .where(JobCheckpoint.job_id == job_id)
        .order_by(JobCheckpoint.step.desc())
        .limit(1)
    ).first()


def pause_job(
    session: Session,
    *,
    job: FineTuningJob,
    worker_id: str | None,
    step: int | None,
    lost: bool = False,
) -> None:
    """A locked job that was ``pausing`` becomes ``paused``: no lease, no worker, no quota;
    a resume queues it again from its newest checkpoint (or from the start when it has
    none on disk: the same data order, so the same run). A pause uses up no attempt; a
    worker lost while pausing keeps the attempt it used. Never commits."""
    checkpoint = latest_checkpoint(session, job.id)
    if checkpoint is not None and not Path(checkpoint.path).is_dir():
        checkpoint = None
    job.status = "paused"
    job.lease_owner = None
    job.lease_expires_at = None
    job.estimated_finish = None
    if not lost:
        job.attempts = max(0, job.attempts - 1)
    if checkpoint is not None:
        job.spec = {**job.spec, "resume_from_checkpoint": checkpoint.path}
    session.add(job)
    where = f"step {checkpoint.step}" if checkpoint is not None else "the start"
    add_event(
        session,
        job_id=job.id,
        level="warn" if lost else "info",
        message=("The worker was lost while pausing; " if lost else "")
        + f"Job paused: a resume continues from {where}",
        data={"step": checkpoint.step if checkpoint is not None else 0},
    )
    record_worker_event(
        session,
        tenant=job.tenant,
        action="job.paused",
        resource=f"job:{job.id}",
        details={
            "job_id": job.id,
            "worker": worker_id,
            "worker_lost": lost,
            "step": step,
            "checkpoint_id": checkpoint.id if checkpoint is not None else None,
            "checkpoint_step": checkpoint.step if checkpoint is not None else None,
            "checkpoint_adapter_sha256": (
                checkpoint.adapter_sha256 if checkpoint is not None else None
            ),
        },
    )
    log.info("job.paused", job_id=job.id, worker=worker_id, lost=lost, step=step)


def requeue(session: Session, *, job: FineTuningJob, reason: str, worker_id: str | None) -> bool:
    """Put a locked running job back in the queue to resume from its newest checkpoint;
    False (and nothing changed) when it has none on disk. Never commits."""
    checkpoint = latest_checkpoint(session, job.id)
    if checkpoint is None or not Path(checkpoint.path).is_dir():
        return False
    job.status = "queued"
    job.lease_owner = None
    job.lease_expires_at = None
    job.estimated_finish = None
    job.spec = {**job.spec, "resume_from_checkpoint": checkpoint.path}
    session.add(job)
    add_event(
        session,
        job_id=job.id,
        level="warn",
        message=f"Job interrupted ({reason}); queued to resume from step {checkpoint.step}",
    )
    record_worker_event(
        session,
        tenant=job.tenant,
        action="job.requeued",
        resource=f"job:{job.id}",
        details={
            "job_id": job.id,
            "reason": reason,
            "worker": worker_id,
            "attempt": job.attempts,
            "checkpoint_id": checkpoint.id,
            "checkpoint_step": checkpoint.step,
            "checkpoint_adapter_sha256": checkpoint.adapter_sha256,
        },
    )
    log.warning("job.requeued", job_id=job.id, reason=reason, step=checkpoint.step)
    return True


def reap_expired(
    engine: Engine, *, max_attempts: int, executor: str = "local", now: float | None = None
) -> list[tuple[str, str]]:
    """Take back every running job whose lease has expired: re-queued (resumes from its
    last checkpoint) while attempts remain, else failed with worker_lost; one that was
    pausing is paused. Returns [(job id, new status)]."""
    now = time.time() if now is None else now
    outcomes: list[tuple[str, str]] = []
    with Session(engine) as session:
        expired = session.exec(
            select(FineTuningJob)
            .where(
                col(FineTuningJob.status).in_(LEASED_STATUSES),
                FineTuningJob.executor == executor,
                FineTuningJob.lease_expires_at < now,
            )
            .with_for_update(skip_locked=True)
        ).all()
        for job in expired:
            lost = job.lease_owner
            if job.status == "pausing" and not job.cancel_requested:
                pause_job(session, job=job, worker_id=lost, step=None, lost=True)
                outcomes.append((job.id, "paused"))
                continue
            if job.attempts < max_attempts and requeue(
                session, job=job, reason="worker_lost", worker_id=lost
            ):
                outcomes.append((job.id, "queued"))
                continue
            fail_job(
                session,
                job=job,
                code="worker_lost",
                message="the worker running this job stopped renewing its lease"
                + (
                    " and no checkpoint is left to resume from"
                    if job.attempts < max_attempts
                    else f" ({job.attempts} attempts used)"
                ),
                worker_id=lost,
            )
            outcomes.append((job.id, "failed"))
        session.commit()
    return outcomes
