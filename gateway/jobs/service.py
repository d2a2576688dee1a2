"""Governed fine-tuning job submission and the job's OpenAI-shaped views. Never commits.

A submission passes, in order, every gate below; the job row, its first events and its
audit event land in one transaction, or nothing does: the group writer's
(gateway.jobs.writer), which also makes the last re-checks and the quota decision. A
refusal is answered with a machine-readable reason and audited in a transaction of its
own:

1. policy: ``use`` on a parent fine-tuned model (when continuing one), ``train`` on the base
   model, ``train`` on every file's data source (class rules, e.g. no restricted data for
   ml-engineers, reach the source through its classification);
2. data: each file processed and still stored; each source approved and allowing the
   purpose; the source's minimum examples; no training/validation overlap;
3. quotas: concurrent jobs and estimated device-hours this month, per tenant (429).

The gates are gateway.jobs.gates; the checks that read and the plan they produce,
gateway.jobs.submission.
"""

from __future__ import annotations

import re
import time
from typing import NoReturn

import structlog
from sqlalchemy import func
from sqlmodel import Session, col, select

from gateway.audit_api.service import allowed_event, record_allowed, record_refusal
from gateway.authz import Authorized, allows
from gateway.base_models.models import RegisteredBaseModel
from gateway.data_sources.models import DataSource
from gateway.db import after_commit, read_only
from gateway.errors import (
    Conflict,
    GatewayError,
    InvalidRequest,
    NotFound,
    PermissionDenied,
    ServiceUnavailable,
)
from gateway.files.models import TrainingFile
from gateway.jobs import gates
from gateway.jobs.events import add_event
from gateway.jobs.models import (
    ACTIVE_STATUSES,
    FINAL_STATUSES,
    FineTuningJob,
    JobCheckpoint,
    JobEvent,
)
from gateway.jobs.schemas import JOB_ID, JobCreate
from gateway.jobs.submission import Checks, JobsRuntime, Plan, plan
from gateway.jobs.writer import Submission, lock_tenants
from gateway.pagination import visible_page
from gateway.runtime import Runtime

log = structlog.get_logger()

EVENT_SEQ = re.compile(r"[0-9]{1,18}")


# --- submission ------------------------------------------------------------------------------


def create(
    session: Session, *, state: JobsRuntime, authorized: Authorized, body: JobCreate
) -> FineTuningJob:
    """Every check that only reads runs here, on rows read in a read-only snapshot (or
    kept from an earlier one: gateway.jobs.snapshots), outside any write transaction. The
    writer (gateway.jobs.writer) then re-checks, in the transaction that inserts the job,
    what could have changed meanwhile (base model retired, source revoked, file erased)
    and the quotas, and writes the job, its first events and its audit event together,
    grouped with the other submissions that queued up meanwhile. The request's own
    session writes nothing."""
    principal = authorized.principal
    _check_integrations(state, body)
    checks = Checks(session, state, authorized)
    with Session(read_only(state.engine), expire_on_commit=False) as reads:
        planned = plan(reads, checks, body=body, tenant=principal.tenant)
    job = _job_row(planned, state=state, authorized=authorized, body=body, checks=checks)
    submission = Submission(
        job=job,
        messages=[
            f"Validated training file {planned.training.id} ({planned.training.examples} examples)",
            f"Fine-tuning job {job.id} created and queued",
        ],
        audit=_created_event(planned, job=job, authorized=authorized, checks=checks),
        source_ids=list(planned.sources),
        file_ids=[file.id for file in planned.files],
    )
    if state.job_writer is None:
        raise ServiceUnavailable("the gateway is starting or stopping", code="shutting_down")
    state.job_writer.write(submission)
    if submission.refused is not None:
        checks.require(submission.refused)
    log.info(
        "job.submitted",
        job_id=job.id,
        base_model=planned.base.name,
        training_sha256=planned.training.sha256,
        estimated_device_hours=planned.estimate["device_hours"],
    )
    return job


def _check_integrations(state: JobsRuntime, body: JobCreate) -> None:
    """Integrations are stored and echoed, never acted on; one that would report to an
    external service is refused while the gateway is offline (none is reachable)."""
    if state.settings.offline and any(i.type == "wandb" for i in body.integrations or ()):
        raise InvalidRequest(
            "the gateway is offline: a wandb integration cannot report to Weights and Biases "
            "(leave `integrations` out, or ask an operator to turn offline mode off)",
            code="integration_unavailable",
            param="integrations",
        )


def _job_row(
    planned: Plan,
    *,
    state: Runtime,
    authorized: Authorized,
    body: JobCreate,
    checks: Checks,
) -> FineTuningJob:
    now_ns = time.time_ns()
    return FineTuningJob(
        id=planned.job_id,
        tenant=authorized.principal.tenant,
        created_by=authorized.principal.sub,
        created_at=now_ns // 1_000_000_000,
        created_ns=now_ns,
        model=body.model,
        base_model=planned.base.name,
        parent_model_id=planned.parent.id if planned.parent else None,
        training_file=planned.training.id,
        validation_file=planned.validation.id if planned.validation else None,
        purpose=body.resolved_purpose,
        suffix=body.suffix,
        seed=planned.seed,
        user_metadata=body.metadata,
        integrations=[i.model_dump() for i in body.integrations] if body.integrations else None,
        hyperparameters=planned.hyperparameters,
        lora=planned.lora,
        evaluation=body.evaluation.model_dump(),
        spec=planned.spec,
        decisions=checks.decisions,
        estimate=planned.estimate,
        estimated_device_seconds=float(planned.estimate["seconds"] or 0.0),
        status="queued",
        executor=state.settings.executor,
        result_files=[],  # given, not defaulted: pydantic inspects a default_factory per call
    )


def _created_event(
    planned: Plan, *, job: FineTuningJob, authorized: Authorized, checks: Checks
) -> dict:
    decisions = checks.decisions
    return allowed_event(
        authorized=authorized,
        action="job.created",
        resource=f"job:{job.id}",
        details={
            "job_id": job.id,
            "model": job.model,
            "base_model": planned.base.name,
            "base_manifest_sha256": planned.base.manifest_sha256,
            "parent_model": job.parent_model_id,
            "purpose": job.purpose,
            "files": [
                {
                    "file_id": f.id,
                    "data_source": f.data_source_id,
                    "sha256": f.sha256,
                    "content_sha256": f.content_sha256,
                }
                for f in planned.files
            ],
            "policy_versions": sorted(
                {d["policy_version"] for d in decisions if d["kind"] == "policy"}
            ),
            # The quota gate is decided by the writer; the event exists only if it passed.
            "gates": [*(d["gate"] for d in decisions if d["kind"] == "gate"), "quota"],
            # The trail takes integers only: whole seconds.
            "estimated_device_seconds": round(planned.estimate["seconds"] or 0),
        },
    )


# --- the job's lifecycle ----------------------------------------------------------------------


def get_in_tenant(
    session: Session, *, tenant: str, job_id: str, for_update: bool = False
) -> FineTuningJob:
    job = None
    if JOB_ID.match(job_id):
        job = session.get(FineTuningJob, job_id, with_for_update=for_update)
    if job is None or job.tenant != tenant:
        raise NotFound(f"fine-tuning job {job_id!r} not found", code="job_not_found")
    return job


def cancel(
    session: Session, *, state: JobsRuntime, authorized: Authorized, job_id: str
) -> FineTuningJob:
    """A job no worker holds yet is cancelled at once; a running one is asked to stop
    (its worker checks between steps and records the cancellation)."""
    job = get_in_tenant(session, tenant=authorized.principal.tenant, job_id=job_id, for_update=True)
    if job.status in FINAL_STATUSES:
        raise Conflict(f"the job is already {job.status}", code="job_not_cancellable")
    if job.status != "running" and job.lease_owner is None:
        job.status = "cancelled"
        job.finished_at = int(time.time())
        add_event(session, job_id=job.id, message="Job cancelled")
        action = "job.cancelled"
    else:
        job.cancel_requested = True
        add_event(session, job_id=job.id, message="Cancellation requested")
        action = "job.cancel_requested"
    session.add(job)
    session.flush()
    record_allowed(
        session,
        authorized=authorized,
        action=action,
        resource=f"job:{job.id}",
        details={"job_id": job.id, "status": job.status},
    )
    executor = state.executor
    if executor is not None:
        after_commit(session, lambda: executor.cancel(job.id))
    return job


def pause(
    session: Session, *, state: JobsRuntime, authorized: Authorized, job_id: str
) -> FineTuningJob:
    """A running job is asked to pause: its worker writes a checkpoint at the next step
    boundary, marks the job ``paused`` and takes the next job; until then it is
    ``pausing``. Only the job's requester, or an admin of the tenant."""
    job = _controlled_job(session, state=state, authorized=authorized, job_id=job_id, verb="pause")
    if job.status != "running" or job.cancel_requested:
        raise Conflict(
            f"only a running job can be paused; this one is {job.status}"
            + (" and its cancellation was asked for" if job.cancel_requested else ""),
            code="job_not_running",
            details={"status": job.status, "cancel_requested": job.cancel_requested},
        )
    job.status = "pausing"
    add_event(session, job_id=job.id, message="Pause requested")
    session.add(job)
    session.flush()
    record_allowed(
        session,
        authorized=authorized,
        action="job.pause_requested",
        resource=f"job:{job.id}",
        details={"job_id": job.id, "requested_by": job.created_by},
    )
    log.info("job.pause_requested", job_id=job.id)
    return job


def resume(
    session: Session, *, state: JobsRuntime, authorized: Authorized, job_id: str
) -> FineTuningJob:
    """A paused job goes back in the queue, to continue from its checkpoint. It counts in
    the tenant's concurrent-job quota again, and what a submission re-checks is checked
    again (base model not retired, sources not revoked, files not erased)."""
    job = _controlled_job(session, state=state, authorized=authorized, job_id=job_id, verb="resume")
    if job.status != "paused":
        raise Conflict(
            f"only a paused job can be resumed; this one is {job.status}",
            code="job_not_paused",
            details={"status": job.status},
        )
    refusal = _resume_refusal(session, state=state, job=job)
    if refusal is not None:
        _refuse(
            session, state=state, authorized=authorized, job_id=job.id, error=refusal, verb="resume"
        )
    job.status = "queued"
    step = _resume_step(session, job)
    add_event(session, job_id=job.id, message=f"Job resumed: queued to continue from step {step}")
    session.add(job)
    session.flush()
    record_allowed(
        session,
        authorized=authorized,
        action="job.resumed",
        resource=f"job:{job.id}",
        details={"job_id": job.id, "requested_by": job.created_by, "from_step": step},
    )
    executor = state.executor
    if executor is not None:
        after_commit(session, lambda: executor.submit(job.id))
    log.info("job.resumed", job_id=job.id, step=step)
    return job


def _controlled_job(
    session: Session, *, state: JobsRuntime, authorized: Authorized, job_id: str, verb: str
) -> FineTuningJob:
    """The job, locked, when the caller may pause or resume it: whoever created it, or an
    admin of the tenant (whom the policy lets edit the tenant)."""
    principal = authorized.principal
    job = get_in_tenant(session, tenant=principal.tenant, job_id=job_id, for_update=True)
    if job.created_by != principal.sub and not allows(state.policy, principal, "tenant", "edit"):
        _refuse(
            session,
            state=state,
            authorized=authorized,
            job_id=job.id,
            verb=verb,
            error=PermissionDenied(
                f"only whoever created the job, or an admin of the tenant, may {verb} it",
                code="not_job_requester",
            ),
        )
    return job


def _refuse(
    session: Session,
    *,
    state: JobsRuntime,
    authorized: Authorized,
    job_id: str,
    error: GatewayError,
    verb: str,
) -> NoReturn:
    """Audited in a transaction of its own, then raised. The request's transaction ends
    first (on SQLite it holds the one write lock the record needs), so nothing of the
    session's rows may be read after: they expired with it."""
    session.rollback()
    record_refusal(
        state,
        principal=authorized.principal,
        action=f"job.{verb}_refused",
        resource=f"job:{job_id}",
        details={"job_id": job_id, "code": error.code},
    )
    raise error


def _resume_refusal(
    session: Session, *, state: JobsRuntime, job: FineTuningJob
) -> GatewayError | None:
    """The first gate a paused job fails now: what could have changed while it waited (a
    base model retired, a source revoked, a file erased or deleted, as a submission's
    writer re-checks), then the tenant's concurrent jobs, counted under the same lock as
    submissions'."""
    base = session.get(RegisteredBaseModel, job.base_model)
    outcomes = [gates.base_model_active(job.base_model, status=base.status if base else "gone")]
    roles = [("training_file", job.training_file), ("validation_file", job.validation_file)]
    for param, file_id in roles:
        if file_id is None:
            continue
        file = session.get(TrainingFile, file_id)
        if file is None:
            outcomes.append(gates.file_usable(file_id, status="deleted", stored=False, param=param))
            continue
        stored = file.content_deleted_at is None
        outcomes.append(gates.file_usable(file_id, status=file.status, stored=stored, param=param))
        source = session.get(DataSource, file.data_source_id)
        status = source.status if source is not None else "gone"
        outcomes.append(gates.source_approved(file.data_source_id, status=status))
    refused = next((outcome.refusal for outcome in outcomes if not outcome.passed), None)
    if refused is not None:
        return refused
    lock_tenants(session, [job.tenant])
    active = session.scalar(
        select(func.count())
        .select_from(FineTuningJob)
        .where(
            col(FineTuningJob.tenant) == job.tenant,
            col(FineTuningJob.status).in_(ACTIVE_STATUSES),
        )
    )
    return gates.concurrent_jobs(active or 0, limit=state.settings.quota_concurrent_jobs).refusal


def _resume_step(session: Session, job: FineTuningJob) -> int:
    path = job.spec.get("resume_from_checkpoint")
    if not path:
        return 0
    step = session.scalar(
        select(col(JobCheckpoint.step)).where(
            col(JobCheckpoint.job_id) == job.id, col(JobCheckpoint.path) == path
        )
    )
    return step or 0


def list_visible(
    session: Session,
    *,
    state: Runtime,
    authorized: Authorized,
    after: str | None,
    limit: int,
    metadata: dict[str, str],
) -> tuple[list[FineTuningJob], bool]:
    """The tenant's jobs, newest first; ``metadata`` filters on exact key/value pairs."""
    principal = authorized.principal

    def wanted(job: FineTuningJob) -> bool:
        if any((job.user_metadata or {}).get(k) != v for k, v in metadata.items()):
            return False
        return allows(state.policy, principal, f"job:{job.id}", "read")

    cursor = None
    if after is not None:
        anchor = get_in_tenant(session, tenant=principal.tenant, job_id=after)
        cursor = (anchor.created_ns, anchor.id)
    return visible_page(
        session,
        select(FineTuningJob).where(col(FineTuningJob.tenant) == principal.tenant),
        keys=[col(FineTuningJob.created_ns), col(FineTuningJob.id)],
        descending=True,
        after=cursor,
        visible=wanted,
        limit=limit,
    )


def list_events(
    session: Session, *, authorized: Authorized, job_id: str, after: str | None, limit: int
) -> tuple[list[JobEvent], bool]:
    """Newest first, as OpenAI lists them; ``after`` an event id (``ftevent-<n>``)."""
    job = get_in_tenant(session, tenant=authorized.principal.tenant, job_id=job_id)
    query = select(JobEvent).where(col(JobEvent.job_id) == job.id)
    if after is not None:
        query = query.where(col(JobEvent.seq) < event_seq(after))
    rows = list(session.scalars(query.order_by(col(JobEvent.seq).desc()).limit(limit + 1)).all())
    return rows[:limit], len(rows) > limit


def event_seq(event_id: str) -> int:
    raw = event_id.removeprefix("ftevent-")
    if not EVENT_SEQ.fullmatch(raw):  # str.isdigit() also takes "²", which int() refuses
        raise InvalidRequest("not an event id", code="invalid_cursor", param="after")
    return int(raw)


def require_job_readonly(state: Runtime, *, tenant: str, job_id: str) -> None:
    with Session(read_only(state.engine)) as session:
        get_in_tenant(session, tenant=tenant, job_id=job_id)


def events_since(state: Runtime, *, job_id: str, after_seq: int) -> tuple[list[JobEvent], str]:
    """For the event stream: events after ``after_seq`` in order, and the job's status,
    from a read-only snapshot of their own (the request's session is long closed)."""
    with Session(read_only(state.engine)) as session:
        rows = list(
            session.scalars(
                select(JobEvent)
                .where(col(JobEvent.job_id) == job_id, col(JobEvent.seq) > after_seq)
                .order_by(col(JobEvent.seq))
                .limit(500)
            ).all()
        )
        status = session.scalar(
            select(col(FineTuningJob.status)).where(col(FineTuningJob.id) == job_id)
        )
    return rows, status or "failed"


def list_checkpoints(
    session: Session, *, authorized: Authorized, job_id: str, after: str | None, limit: int
) -> tuple[FineTuningJob, list[JobCheckpoint], bool]:
    """The job's kept checkpoints, newest first, as OpenAI lists them."""
    job = get_in_tenant(session, tenant=authorized.principal.tenant, job_id=job_id)
    query = select(JobCheckpoint).where(col(JobCheckpoint.job_id) == job.id)
    if after is not None:
        anchor = session.get(JobCheckpoint, after)
        if anchor is None or anchor.job_id != job.id:
            raise InvalidRequest(
                "not a checkpoint of this job", code="invalid_cursor", param="after"
            )
        query = query.where(col(JobCheckpoint.step) < anchor.step)
    rows = list(session.scalars(query.order_by(col(JobCheckpoint.step).desc()).limit(limit + 1)))
    return job, rows[:limit], len(rows) > limit
