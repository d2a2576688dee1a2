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
"""

from __future__ import annotations

import functools
import re
import secrets
import time
from pathlib import Path
from typing import Any, NoReturn

import structlog
from sqlalchemy import select
from sqlmodel import Session

from gateway.audit_api.service import allowed_event, record_allowed
from gateway.base_models import service as base_models
from gateway.base_models.models import RegisteredBaseModel
from gateway.data_sources.models import DataSource
from gateway.data_sources.service import get_in_tenant as get_source
from gateway.data_sources.service import require_purpose, require_usable
from gateway.db import read_only
from gateway.deps import Authorized, after_commit
from gateway.errors import (
    Conflict,
    Forbidden,
    GatewayError,
    InvalidRequest,
    NotFound,
    PermissionDenied,
)
from gateway.files.models import TrainingFile
from gateway.files.service import get_in_tenant_file, stored_content
from gateway.jobs.events import add_event
from gateway.jobs.models import (
    FINAL_STATUSES,
    FLOPS_PER_PARAMETER_TOKEN,
    FineTuningJob,
    JobCheckpoint,
    JobEvent,
)
from gateway.jobs.schemas import JOB_ID, JobCreate
from gateway.jobs.writer import Submission
from gateway.registry.models import ModelVersion
from gateway.state import GatewayState
from ingest import fingerprint_path, min_examples_gate, overlap_gate
from trainer.spec import Hyperparameters, TrainSpec, resolve_hyperparameters

log = structlog.get_logger()

EVENT_SEQ = re.compile(r"[0-9]{1,18}")
BASE_LEARNING_RATE = TrainSpec.__dataclass_fields__["base_learning_rate"].default


def new_job_id() -> str:
    return f"ftjob-{secrets.token_hex(8)}"


def jobs_dir(state: GatewayState) -> Path:
    return state.settings.artifact_dir / "jobs"


# --- submission ------------------------------------------------------------------------------


class _Gates:
    """The decisions of one submission, kept for the job row, the model version and the
    audit event; a refusal is audited and raised."""

    def __init__(self, session: Session, state: GatewayState, authorized: Authorized) -> None:
        self.session = session
        self.state = state
        self.authorized = authorized
        self.decisions: list[dict[str, Any]] = [
            {
                "kind": "policy",
                "object": authorized.obj,
                "action": authorized.act,
                "allowed": True,
                "policy_version": authorized.policy_version,
                "rule": list(authorized.rule) if authorized.rule else None,
            }
        ]

    def allow(self, obj: str, act: str) -> None:
        principal = self.authorized.principal
        decision = self.state.policy.decide(
            principal.subject, principal.tenant, obj, act, extra_roles=principal.roles
        )
        if not decision.allowed:
            self._release()
            self.state.record_denial(
                principal=principal,
                obj=obj,
                act=act,
                decision=decision,
                route=self.authorized.route,
                method=self.authorized.method,
            )
            raise PermissionDenied(
                f"{principal.subject} may not {act} {obj}",
                code="permission_denied" if decision.error is None else "authorization_error",
                details={"object": obj, "action": act, "policy_version": decision.policy_version},
            )
        self.decisions.append(
            {
                "kind": "policy",
                "object": obj,
                "action": act,
                "allowed": True,
                "policy_version": decision.policy_version,
                "rule": list(decision.rule) if decision.rule else None,
            }
        )

    def passed(self, gate: str, **figures: Any) -> None:
        self.decisions.append({"kind": "gate", "gate": gate, "passed": True, **figures})

    def _release(self) -> None:
        # The request's transaction fails with this refusal anyway; ending it first frees
        # SQLite's one write lock for the refusal's own audit transaction.
        self.session.rollback()

    def refuse(self, error: GatewayError, *, gate: str) -> NoReturn:
        self._release()
        self.state.record_refusal(
            principal=self.authorized.principal,
            action="job.refused",
            resource="job:*",
            details={"gate": gate, "code": error.code, "figures": _audit_safe(error.details)},
        )
        raise error


def _audit_safe(details: dict[str, Any] | None) -> dict[str, Any]:
    """Figures and ids only: drop anything that is not a number, bool or short id."""
    safe: dict[str, Any] = {}
    for key, value in (details or {}).items():
        short_id = isinstance(value, str) and len(value) <= 128
        if value is None or isinstance(value, bool | int) or short_id:
            safe[key] = value
        elif isinstance(value, float):
            safe[key] = repr(value)  # the trail's canonical JSON takes no floats
        elif isinstance(value, list) and all(isinstance(v, str) for v in value):
            safe[key] = value[:32]
    return safe


def create(session: Session, *, authorized: Authorized, body: JobCreate) -> FineTuningJob:
    """Every check that only reads runs here, on rows read in a read-only snapshot (or
    kept from an earlier one: gateway.jobs.snapshots), outside any write transaction. The
    writer (gateway.jobs.writer) then re-checks, in the transaction that inserts the job,
    what could have changed meanwhile (base model retired, source revoked, file erased)
    and the quotas, and writes the job, its first events and its audit event together,
    grouped with the other submissions that queued up meanwhile. The request's own
    session writes nothing."""
    state: GatewayState = session.info["gateway"]
    principal = authorized.principal
    gates = _Gates(session, state, authorized)
    purpose = body.resolved_purpose
    with Session(read_only(state.engine), expire_on_commit=False) as reads:
        parent, base = _resolve_model(reads, gates, body=body, tenant=principal.tenant)
        lora = _lora_for(reads, gates, body=body, parent=parent)
        training = _usable_file(
            reads, gates, tenant=principal.tenant, file_id=body.training_file, param="training_file"
        )
        validation = None
        if body.validation_file is not None:
            validation = _usable_file(
                reads,
                gates,
                tenant=principal.tenant,
                file_id=body.validation_file,
                param="validation_file",
            )
        files = [file for file in (training, validation) if file is not None]
        sources: dict[str, DataSource] = {}
        for file in files:
            if file.data_source_id in sources:
                continue
            source = state.usable_rows.data_source(
                reads,
                principal.tenant,
                file.data_source_id,
                read=functools.partial(
                    get_source, reads, tenant=principal.tenant, data_source_id=file.data_source_id
                ),
            )
            gates.allow(f"ds:{source.id}", "train")
            _check_source(gates, source=source, purpose=purpose)
            sources[source.id] = source
        _check_data(
            state,
            gates,
            training=training,
            validation=validation,
            source=sources[training.data_source_id],
        )
        hyperparameters = body.requested_hyperparameters.model_dump()
        estimate = _estimate(state, base=base, training=training, hyperparameters=hyperparameters)
        job_id = new_job_id()
        seed = body.seed if body.seed is not None else secrets.randbelow(2**31)
        spec = _train_spec(
            state,
            job_id=job_id,
            base=base,
            parent=parent,
            training=training,
            validation=validation,
            hyperparameters=hyperparameters,
            lora=lora,
            body=body,
            seed=seed,
        )

    now_ns = time.time_ns()
    job = FineTuningJob(
        id=job_id,
        tenant=principal.tenant,
        created_by=principal.sub,
        created_at=now_ns // 1_000_000_000,
        created_ns=now_ns,
        model=body.model,
        base_model=base.name,
        parent_model_id=parent.id if parent else None,
        training_file=training.id,
        validation_file=validation.id if validation else None,
        purpose=purpose,
        suffix=body.suffix,
        seed=seed,
        user_metadata=body.metadata,
        hyperparameters=hyperparameters,
        lora=lora,
        evaluation=body.evaluation.model_dump(),
        spec=spec,
        decisions=gates.decisions,
        estimate=estimate,
        estimated_device_seconds=float(estimate["seconds"] or 0.0),
        status="queued",
        executor=state.settings.executor,
        result_files=[],  # given, not defaulted: pydantic inspects a default_factory per call
    )
    audit = allowed_event(
        authorized=authorized,
        action="job.created",
        resource=f"job:{job.id}",
        details={
            "job_id": job.id,
            "model": body.model,
            "base_model": base.name,
            "base_manifest_sha256": base.manifest_sha256,
            "parent_model": job.parent_model_id,
            "purpose": purpose,
            "files": [
                {
                    "file_id": f.id,
                    "data_source": f.data_source_id,
                    "sha256": f.sha256,
                    "content_sha256": f.content_sha256,
                }
                for f in files
            ],
            "policy_versions": sorted(
                {d["policy_version"] for d in gates.decisions if d["kind"] == "policy"}
            ),
            # The quota gate is decided by the writer; the event exists only if it passed.
            "gates": [*(d["gate"] for d in gates.decisions if d["kind"] == "gate"), "quota"],
            # The trail takes integers only: whole seconds.
            "estimated_device_seconds": round(estimate["seconds"] or 0),
        },
    )
    submission = Submission(
        job=job,
        messages=[
            f"Validated training file {training.id} ({training.examples} examples)",
            f"Fine-tuning job {job.id} created and queued",
        ],
        audit=audit,
        source_ids=list(sources),
        file_ids=[file.id for file in files],
    )
    state.job_writer.write(submission)
    if submission.refusal is not None:
        gates.refuse(submission.refusal, gate=submission.refused_gate)
    log.info(
        "job.submitted",
        job_id=job.id,
        base_model=base.name,
        training_sha256=training.sha256,
        estimated_device_hours=estimate["device_hours"],
    )
    return job


def _resolve_model(
    session: Session, gates: _Gates, *, body: JobCreate, tenant: str
) -> tuple[ModelVersion | None, RegisteredBaseModel]:
    parent = None
    base_name = body.model
    if body.model.startswith("ft:"):
        parent = session.get(ModelVersion, body.model)
        if parent is None or parent.tenant != tenant:
            raise NotFound(f"model {body.model!r} not found", code="model_not_found", param="model")
        gates.allow(f"model:{parent.id}", "use")
        if parent.status == "retired":
            gates.refuse(
                InvalidRequest(
                    f"model {parent.id} is retired", code="model_retired", param="model"
                ),
                gate="model",
            )
        base_name = parent.base_model
    try:
        base = gates.state.usable_rows.base_model(
            session, base_name, read=lambda: base_models.get(session, name=base_name)
        )
    except NotFound:
        raise NotFound(
            f"model {body.model!r} not found", code="model_not_found", param="model"
        ) from None
    gates.allow(f"base:{base.name}", "train")
    try:
        base_models.require_active(base)
    except Conflict as exc:
        gates.refuse(
            InvalidRequest(exc.message, code=exc.code, param="model", details=exc.details),
            gate="model",
        )
    return parent, base


def _lora_for(
    session: Session, gates: _Gates, *, body: JobCreate, parent: ModelVersion | None
) -> dict[str, Any]:
    requested = body.lora.model_dump()
    if parent is None:
        return requested
    parent_job = session.get(FineTuningJob, parent.job_id)
    inherited = parent_job.lora if parent_job is not None else requested
    if "lora" in body.model_fields_set and requested != inherited:
        gates.refuse(
            InvalidRequest(
                "continuing a fine-tuned model keeps its adapter's LoRA configuration",
                code="lora_mismatch",
                param="lora",
                details={"parent_r": inherited.get("r")},
            ),
            gate="model",
        )
    return inherited


def _usable_file(
    session: Session, gates: _Gates, *, tenant: str, file_id: str, param: str
) -> TrainingFile:
    try:
        file = gates.state.usable_rows.training_file(
            session,
            tenant,
            file_id,
            read=lambda: get_in_tenant_file(session, tenant=tenant, file_id=file_id),
        )
    except NotFound:
        raise NotFound(f"file {file_id!r} not found", code="file_not_found", param=param) from None
    path = stored_content(gates.state.settings, file)
    if file.status != "processed" or path is None or not path.is_file():
        gates.refuse(
            InvalidRequest(
                f"file {file.id} is {file.status}: only processed files can be trained on",
                code="file_not_usable",
                param=param,
                details={"file_id": file.id, "status": file.status},
            ),
            gate="file",
        )
    if file.purpose != "fine-tune":
        gates.refuse(
            InvalidRequest(
                f"file {file.id} was not uploaded for fine-tune",
                code="file_not_usable",
                param=param,
            ),
            gate="file",
        )
    return file


def _check_source(gates: _Gates, *, source: DataSource, purpose: str) -> None:
    try:
        require_usable(source)
    except Conflict as exc:
        gates.refuse(
            Forbidden(exc.message, code=exc.code, details=exc.details), gate="data_source_approved"
        )
    try:
        require_purpose(source, purpose)
    except Forbidden as exc:
        gates.refuse(exc, gate="purpose")
    gates.passed(
        "data_source_approved",
        data_source=source.id,
        approved_by=source.approved_by,
        approval_policy_version=source.approval_policy_version,
    )
    gates.passed("purpose", data_source=source.id, purpose=purpose)


def _check_data(
    state: GatewayState,
    gates: _Gates,
    *,
    training: TrainingFile,
    validation: TrainingFile | None,
    source: DataSource,
) -> None:
    minimum = min_examples_gate(examples=training.examples, minimum=source.min_examples)
    if not minimum.passed:
        gates.refuse(
            InvalidRequest(
                minimum.message,
                code=minimum.code or "too_few_examples",
                param="training_file",
                details=minimum.details,
            ),
            gate=minimum.gate,
        )
    gates.passed(minimum.gate, **minimum.details)
    if validation is None:
        return
    settings = state.settings
    training_path = stored_content(settings, training)
    validation_path = stored_content(settings, validation)
    assert training_path is not None and validation_path is not None
    overlap = overlap_gate(
        training_fingerprint=fingerprint_path(training_path),
        validation_fingerprint=fingerprint_path(validation_path),
    )
    figures = {key: overlap.details[key] for key in ("overlapping_lines", "max_overlapping_lines")}
    if not overlap.passed:
        gates.refuse(
            InvalidRequest(
                overlap.message,
                code=overlap.code or overlap.gate,
                param="validation_file",
                details=figures,
            ),
            gate=overlap.gate,
        )
    gates.passed(overlap.gate, **figures)


def _estimate(
    state: GatewayState,
    *,
    base: RegisteredBaseModel,
    training: TrainingFile,
    hyperparameters: dict[str, Any],
) -> dict[str, Any]:
    """Tokens x epochs -> FLOPs -> device-hours on the configured device. Token counts are
    the upload's approximation (recounted with the base model's tokenizer at run time)."""
    settings = state.settings
    tokens = int(((training.report or {}).get("tokens") or {}).get("total") or 0)
    resolved = resolve_hyperparameters(
        Hyperparameters(**hyperparameters),
        n_training_examples=max(training.examples, 1),
        base_learning_rate=BASE_LEARNING_RATE,
    )
    processed = tokens * resolved.n_epochs
    flops = (
        FLOPS_PER_PARAMETER_TOKEN * base.parameter_count * processed
        if base.parameter_count
        else None
    )
    seconds = flops / (settings.estimate_device_flops * settings.estimate_mfu) if flops else None
    return {
        "training_tokens": tokens,
        "n_epochs": resolved.n_epochs,
        "tokens_processed": processed,
        "parameters": base.parameter_count,
        "flops": flops,
        "device": settings.estimate_device,
        "device_flops": settings.estimate_device_flops,
        "mfu": settings.estimate_mfu,
        "seconds": round(seconds, 3) if seconds is not None else None,
        "device_hours": round(seconds / 3600, 6) if seconds is not None else 0.0,
        "method": f"{FLOPS_PER_PARAMETER_TOKEN} x parameters x tokens x epochs",
    }


def _train_spec(
    state: GatewayState,
    *,
    job_id: str,
    base: RegisteredBaseModel,
    parent: ModelVersion | None,
    training: TrainingFile,
    validation: TrainingFile | None,
    hyperparameters: dict[str, Any],
    lora: dict[str, Any],
    body: JobCreate,
    seed: int,
) -> dict[str, Any]:
    settings = state.settings
    evaluation = body.evaluation.model_dump()
    spec: dict[str, Any] = {
        "base_model_dir": str(base_models.model_dir(settings, base.name)),
        "training_file": str(stored_content(settings, training)),
        "validation_file": str(stored_content(settings, validation)) if validation else None,
        "output_dir": str(jobs_dir(state) / job_id),
        "hyperparameters": hyperparameters,
        "lora": lora,
        "evaluation": evaluation,
        "seed": seed,
    }
    if parent is not None:
        spec["init_adapter_dir"] = parent.artifact_dir
    try:
        return TrainSpec.from_dict(spec).to_dict()
    except (TypeError, ValueError) as exc:
        raise InvalidRequest(
            f"the job cannot be run as asked: {exc}", code="invalid_training_spec"
        ) from None


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


def cancel(session: Session, *, authorized: Authorized, job_id: str) -> FineTuningJob:
    """A job no worker holds yet is cancelled at once; a running one is asked to stop
    (its worker checks between steps and records the cancellation)."""
    state: GatewayState = session.info["gateway"]
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
    executor = getattr(state, "executor", None)
    if executor is not None:
        after_commit(session, lambda: executor.cancel(job.id))
    return job


def list_visible(
    session: Session,
    *,
    authorized: Authorized,
    after: str | None,
    limit: int,
    metadata: dict[str, str],
) -> tuple[list[FineTuningJob], bool]:
    """The tenant's jobs, newest first; ``metadata`` filters on exact key/value pairs."""
    principal = authorized.principal
    policy = session.info["gateway"].policy
    query = select(FineTuningJob).where(FineTuningJob.tenant == principal.tenant)
    if after is not None:
        anchor = get_in_tenant(session, tenant=principal.tenant, job_id=after)
        query = query.where(
            (FineTuningJob.created_ns < anchor.created_ns)
            | ((FineTuningJob.created_ns == anchor.created_ns) & (FineTuningJob.id < anchor.id))
        )
    query = query.order_by(FineTuningJob.created_ns.desc(), FineTuningJob.id.desc())
    visible: list[FineTuningJob] = []
    offset = 0
    batch = 500
    while len(visible) <= limit:
        rows = session.scalars(query.offset(offset).limit(batch)).all()
        for job in rows:
            if any((job.user_metadata or {}).get(k) != v for k, v in metadata.items()):
                continue
            if policy.decide(
                principal.subject,
                principal.tenant,
                f"job:{job.id}",
                "read",
                extra_roles=principal.roles,
            ).allowed:
                visible.append(job)
        if len(rows) < batch:
            break
        offset += batch
    return visible[:limit], len(visible) > limit


def list_events(
    session: Session, *, authorized: Authorized, job_id: str, after: str | None, limit: int
) -> tuple[list[JobEvent], bool]:
    """Newest first, as OpenAI lists them; ``after`` an event id (``ftevent-<n>``)."""
    job = get_in_tenant(session, tenant=authorized.principal.tenant, job_id=job_id)
    query = select(JobEvent).where(JobEvent.job_id == job.id)
    if after is not None:
        query = query.where(JobEvent.seq < event_seq(after))
    rows = list(session.scalars(query.order_by(JobEvent.seq.desc()).limit(limit + 1)).all())
    return rows[:limit], len(rows) > limit


def event_seq(event_id: str) -> int:
    raw = event_id.removeprefix("ftevent-")
    if not EVENT_SEQ.fullmatch(raw):  # str.isdigit() also takes "²", which int() refuses
        raise InvalidRequest("not an event id", code="invalid_cursor", param="after")
    return int(raw)


def require_job_readonly(state: GatewayState, *, tenant: str, job_id: str) -> None:
    with Session(read_only(state.engine)) as session:
        get_in_tenant(session, tenant=tenant, job_id=job_id)


def events_since(state: GatewayState, *, job_id: str, after_seq: int) -> tuple[list[JobEvent], str]:
    """For the event stream: events after ``after_seq`` in order, and the job's status,
    from a read-only snapshot of their own (the request's session is long closed)."""
    with Session(read_only(state.engine)) as session:
        rows = list(
            session.scalars(
                select(JobEvent)
                .where(JobEvent.job_id == job_id, JobEvent.seq > after_seq)
                .order_by(JobEvent.seq)
                .limit(500)
            ).all()
        )
        status = session.scalar(select(FineTuningJob.status).where(FineTuningJob.id == job_id))
    return rows, status or "failed"


def list_checkpoints(
    session: Session, *, authorized: Authorized, job_id: str, after: str | None, limit: int
) -> tuple[list[JobCheckpoint], bool]:
    job = get_in_tenant(session, tenant=authorized.principal.tenant, job_id=job_id)
    query = select(JobCheckpoint).where(JobCheckpoint.job_id == job.id)
    if after is not None:
        anchor = session.get(JobCheckpoint, after)
        if anchor is None or anchor.job_id != job.id:
            raise InvalidRequest(
                "not a checkpoint of this job", code="invalid_cursor", param="after"
            )
        query = query.where(JobCheckpoint.step < anchor.step)
    rows = list(session.scalars(query.order_by(JobCheckpoint.step.desc()).limit(limit + 1)))
    return rows[:limit], len(rows) > limit
