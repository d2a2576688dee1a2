"""A job submission's dry run: its cost estimate and every gate that would refuse it.

The checks are the submission's own (gateway.jobs.submission's read checks over the same
snapshot rows, gateway.jobs.gates for every fact, the policy for every decision), run
with a ``Checks`` that notes each refusal and goes on instead of ending at the first.
Then the quota gates, on this tenant's figures as they stand now (the writer counts them
again, in order, for a real submission). Nothing is written but the dry run's own audit
event: it reveals what the policy lets the caller do, as ``POST /v1/policies/check``
does, so it is recorded like that check.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func
from sqlmodel import Session, col, select

from gateway.audit_api.service import record_allowed
from gateway.authz import Authorized, decide, refusal
from gateway.base_models.models import RegisteredBaseModel
from gateway.data_sources.models import DataSource
from gateway.db import read_only
from gateway.errors import GatewayError
from gateway.files.models import TrainingFile
from gateway.files.service import stored_content
from gateway.jobs import gates, submission
from gateway.jobs.gates import Outcome
from gateway.jobs.models import ACTIVE_STATUSES, FineTuningJob
from gateway.jobs.schemas import JobCreate
from gateway.jobs.submission import Checks, JobsRuntime
from gateway.jobs.writer import month_start
from ingest import fingerprint_path


@dataclass(frozen=True)
class Refusal:
    """One gate that would refuse: the code, message and param the submission would get."""

    gate: str
    status: int
    code: str
    message: str
    param: str | None
    details: dict[str, Any] | None

    @classmethod
    def of(cls, gate: str, error: GatewayError) -> Refusal:
        return cls(gate, error.status_code, error.code, error.message, error.param, error.details)


@dataclass(frozen=True)
class DryRun:
    estimate: dict[str, Any] | None
    refusals: list[Refusal]
    decisions: list[dict[str, Any]]

    @property
    def would_pass(self) -> bool:
        return not self.refusals


class CollectingChecks(Checks):
    """The submission's checks, noting each refusal instead of raising it (and auditing
    none of them as a denial: nothing was attempted)."""

    def __init__(self, session: Session, state: JobsRuntime, authorized: Authorized) -> None:
        super().__init__(session, state, authorized)
        self.refusals: list[Refusal] = []

    def allow(self, obj: str, act: str) -> None:
        principal = self.authorized.principal
        outcome = decide(
            self.state.policy,
            principal,
            obj,
            act,
            route=self.authorized.route,
            method=self.authorized.method,
        )
        if isinstance(outcome, Authorized):
            self.decisions.append(outcome.decision_record())
            return
        denied = refusal(outcome, principal=principal, obj=obj, act=act)
        self.refusals.append(Refusal.of("policy", denied))

    def require(self, outcome: Outcome, *, record: bool = True) -> None:
        if outcome.refusal is not None:
            self.refusals.append(Refusal.of(outcome.gate, outcome.refusal))
        elif record:
            self.decisions.append(
                {"kind": "gate", "gate": outcome.gate, "passed": True, **outcome.figures}
            )

    def refuse(self, error: GatewayError, *, gate: str) -> None:  # type: ignore[override]
        self.refusals.append(Refusal.of(gate, error))


def dry_run(
    session: Session, *, state: JobsRuntime, authorized: Authorized, body: JobCreate
) -> DryRun:
    """Every gate of a submission of ``body``, none stopping the others; audited as
    ``job.dry_run`` in the request's transaction."""
    checks = CollectingChecks(session, state, authorized)
    with Session(read_only(state.engine), expire_on_commit=False) as reads:
        outcome = _run_checks(reads, checks, body=body, tenant=authorized.principal.tenant)
    record_allowed(
        session,
        authorized=authorized,
        action="job.dry_run",
        resource="job:*",
        details={
            "model": body.model[:128],
            "training_file": body.training_file,
            "validation_file": body.validation_file,
            "refusals": [{"gate": r.gate, "code": r.code} for r in outcome.refusals[:32]],
        },
    )
    return outcome


def _run_checks(
    reads: Session, checks: CollectingChecks, *, body: JobCreate, tenant: str
) -> DryRun:
    base, parent, lora = _model(reads, checks, body=body, tenant=tenant)
    training = _file(
        reads, checks, tenant=tenant, file_id=body.training_file, param="training_file"
    )
    validation = None
    if body.validation_file is not None:
        validation = _file(
            reads, checks, tenant=tenant, file_id=body.validation_file, param="validation_file"
        )
    files = [file for file in (training, validation) if file is not None]
    sources = _sources(reads, checks, tenant=tenant, files=files, purpose=body.resolved_purpose)
    _data_gates(checks, training=training, validation=validation, sources=sources)
    estimate = None
    if base is not None and training is not None:
        hyperparameters = body.requested_hyperparameters.model_dump()
        estimate = submission.estimate(
            checks.state, base=base, training=training, hyperparameters=hyperparameters
        )
        _spec_gate(
            checks,
            body=body,
            base=base,
            parent=parent,
            lora=lora,
            training=training,
            validation=validation,
            hyperparameters=hyperparameters,
        )
    _quota_gates(reads, checks, tenant=tenant, estimate=estimate)
    return DryRun(estimate=estimate, refusals=checks.refusals, decisions=checks.decisions)


def _model(
    reads: Session, checks: CollectingChecks, *, body: JobCreate, tenant: str
) -> tuple[RegisteredBaseModel | None, Any, dict[str, Any]]:
    try:
        parent, base = submission._resolve_model(reads, checks, body=body, tenant=tenant)
    except GatewayError as exc:  # no such model: nothing below the model can be checked
        checks.refusals.append(Refusal.of("model", exc))
        return None, None, body.lora.model_dump()
    return base, parent, submission._lora_for(reads, checks, body=body, parent=parent)


def _file(
    reads: Session, checks: CollectingChecks, *, tenant: str, file_id: str, param: str
) -> TrainingFile | None:
    try:
        return submission._usable_file(reads, checks, tenant=tenant, file_id=file_id, param=param)
    except GatewayError as exc:
        checks.refusals.append(Refusal.of("file", exc))
        return None


def _sources(
    reads: Session,
    checks: CollectingChecks,
    *,
    tenant: str,
    files: list[TrainingFile],
    purpose: str,
) -> dict[str, DataSource]:
    sources: dict[str, DataSource] = {}
    for file in files:
        if file.data_source_id in sources:
            continue
        try:
            sources |= submission._usable_sources(
                reads, checks, tenant=tenant, files=[file], purpose=purpose
            )
        except GatewayError as exc:
            checks.refusals.append(Refusal.of("data_source", exc))
    return sources


def _data_gates(
    checks: CollectingChecks,
    *,
    training: TrainingFile | None,
    validation: TrainingFile | None,
    sources: dict[str, DataSource],
) -> None:
    """The gates of submission._check_data, each on what could be read."""
    if training is None:
        return
    source = sources.get(training.data_source_id)
    if source is not None:
        checks.require(gates.enough_examples(training.examples, minimum=source.min_examples))
        if source.max_conflict_rate is not None:  # a gate the source sets, recorded when it does
            checks.require(
                gates.conflict_rate(
                    training.id, datasheet=training.report, maximum=source.max_conflict_rate
                )
            )
    if validation is None:
        return
    settings = checks.state.settings
    paths = [stored_content(settings, file) for file in (training, validation)]
    if all(path is not None and path.is_file() for path in paths):
        training_path, validation_path = paths
        assert training_path is not None and validation_path is not None
        checks.require(
            gates.no_overlap(
                fingerprint_path(training_path),
                fingerprint_path(validation_path),
                threshold=source.overlap_threshold if source else gates.DEFAULT_OVERLAP_THRESHOLD,
                max_lines=source.max_overlapping_lines if source else 0,
            )
        )


def _spec_gate(
    checks: CollectingChecks,
    *,
    body: JobCreate,
    base: RegisteredBaseModel,
    parent: Any,
    lora: dict[str, Any],
    training: TrainingFile,
    validation: TrainingFile | None,
    hyperparameters: dict[str, Any],
) -> None:
    """Whether the run could be set up as asked (hyperparameters, LoRA settings)."""
    try:
        submission.train_spec(
            checks.state,
            job_id=submission.new_job_id(),
            base=base,
            parent=parent,
            training=training,
            validation=validation,
            hyperparameters=hyperparameters,
            lora=lora,
            body=body,
            seed=body.seed if body.seed is not None else 0,
        )
    except GatewayError as exc:
        checks.refusals.append(Refusal.of("spec", exc))


def _quota_gates(
    reads: Session, checks: CollectingChecks, *, tenant: str, estimate: dict[str, Any] | None
) -> None:
    """The writer's quota gates, on this tenant's figures as they stand now."""
    settings = checks.state.settings
    active = reads.exec(
        select(func.count())
        .select_from(FineTuningJob)
        .where(
            col(FineTuningJob.tenant) == tenant,
            col(FineTuningJob.status).in_(ACTIVE_STATUSES),
        )
    ).one()
    used = reads.exec(
        select(func.coalesce(func.sum(col(FineTuningJob.estimated_device_seconds)), 0.0)).where(
            col(FineTuningJob.tenant) == tenant,
            col(FineTuningJob.created_ns) >= month_start(time.time()) * 1_000_000_000,
        )
    ).one()
    checks.require(gates.concurrent_jobs(int(active), limit=settings.quota_concurrent_jobs))
    requested = float((estimate or {}).get("seconds") or 0.0)
    checks.require(
        gates.device_hours(
            float(used),
            requested_seconds=requested,
            limit_hours=settings.quota_device_hours_per_month,
        )
    )
