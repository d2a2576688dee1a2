"""What a job submission is checked against, and what it becomes once it passes.

``plan`` reads the rows a submission names (from a read-only snapshot, or kept from an
earlier one: gateway.jobs.snapshots), puts each decision to the policy and each fact to
its gate (gateway.jobs.gates), and returns a ``Plan``; ``Checks`` keeps every decision
for the job row and its audit event, and turns the first refusal into an audited error.
Nothing here writes: the job row, its events and its audit event are the writer's
(gateway.jobs.writer), which makes the last re-checks and the quota decision."""

from __future__ import annotations

import functools
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, Protocol

from sqlmodel import Session

from gateway.audit_api.service import deny, record_refusal
from gateway.authz import Authorized, decide
from gateway.base_models import service as base_models
from gateway.base_models.models import RegisteredBaseModel
from gateway.data_sources.models import DataSource
from gateway.data_sources.service import get_in_tenant as get_source
from gateway.errors import GatewayError, InvalidRequest, NotFound
from gateway.files.models import TrainingFile
from gateway.files.service import get_in_tenant_file, stored_content
from gateway.jobs import gates, mislabels
from gateway.jobs.gates import Outcome
from gateway.jobs.models import FLOPS_PER_PARAMETER_TOKEN, FineTuningJob
from gateway.jobs.schemas import JobCreate
from gateway.jobs.snapshots import UsableRows
from gateway.jobs.writer import SubmissionWriter
from gateway.registry.models import ModelVersion
from gateway.runtime import Runtime
from ingest import fingerprint_path
from trainer.spec import Hyperparameters, TrainSpec, resolve_hyperparameters

BASE_LEARNING_RATE: float = TrainSpec.base_learning_rate  # the dataclass field's default


class Canceller(Protocol):
    """What the jobs domain asks of the executor: a committed cancel flag, a job queued
    again (resumed)."""

    def cancel(self, job_id: str) -> None: ...

    def submit(self, job_id: str) -> None: ...


class JobsRuntime(Runtime, Protocol):
    """What the jobs domain uses of the process beside the common Runtime."""

    @property
    def usable_rows(self) -> UsableRows: ...

    @property
    def job_writer(self) -> SubmissionWriter | None: ...

    @property
    def executor(self) -> Canceller | None: ...


def new_job_id() -> str:
    return f"ftjob-{secrets.token_hex(8)}"


def jobs_dir(state: Runtime) -> Path:
    return state.settings.artifact_dir / "jobs"


class Checks:
    """The decisions of one submission, kept for the job row, the model version and the
    audit event; a refusal is audited and raised."""

    def __init__(self, session: Session, state: JobsRuntime, authorized: Authorized) -> None:
        self.session = session
        self.state = state
        self.authorized = authorized
        self.decisions: list[dict[str, Any]] = [authorized.decision_record()]

    def allow(self, obj: str, act: str) -> None:
        """The policy must allow ``act`` on ``obj`` too (the route's own decision allowed
        the submission as such)."""
        principal = self.authorized.principal
        outcome = decide(
            self.state.policy,
            principal,
            obj,
            act,
            route=self.authorized.route,
            method=self.authorized.method,
        )
        if not isinstance(outcome, Authorized):
            self._release()
            deny(
                self.state,
                principal=principal,
                obj=obj,
                act=act,
                decision=outcome,
                route=self.authorized.route,
                method=self.authorized.method,
            )
        self.decisions.append(outcome.decision_record())

    def require(self, outcome: Outcome, *, record: bool = True) -> None:
        """A gate's outcome: refused, the submission ends here; passed, its figures join
        the decisions (unless ``record`` is off: gates whose pass the row never listed)."""
        if outcome.refusal is not None:
            self.refuse(outcome.refusal, gate=outcome.gate)
        if record:
            self.decisions.append(
                {"kind": "gate", "gate": outcome.gate, "passed": True, **outcome.figures}
            )

    def refuse(self, error: GatewayError, *, gate: str) -> NoReturn:
        self._release()
        record_refusal(
            self.state,
            principal=self.authorized.principal,
            action="job.refused",
            resource="job:*",
            details={"gate": gate, "code": error.code, "figures": _audit_safe(error.details)},
        )
        raise error

    def _release(self) -> None:
        # The request's transaction fails with this refusal anyway; ending it first frees
        # SQLite's one write lock for the refusal's own audit transaction.
        self.session.rollback()


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


# --- the plan ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """Everything a submission that passed its checks is made of."""

    job_id: str
    base: RegisteredBaseModel
    parent: ModelVersion | None
    lora: dict[str, Any]
    training: TrainingFile
    validation: TrainingFile | None
    sources: dict[str, DataSource]
    hyperparameters: dict[str, Any]
    estimate: dict[str, Any]
    seed: int
    spec: dict[str, Any]

    @property
    def files(self) -> list[TrainingFile]:
        return [file for file in (self.training, self.validation) if file is not None]


def plan(reads: Session, checks: Checks, *, body: JobCreate, tenant: str) -> Plan:
    """Every check that only reads, in the order the refusals are documented: the model,
    the files, each file's data source (policy, approval, purpose), then the data gates."""
    state = checks.state
    parent, base = _resolve_model(reads, checks, body=body, tenant=tenant)
    lora = _lora_for(reads, checks, body=body, parent=parent)
    training = _usable_file(
        reads, checks, tenant=tenant, file_id=body.training_file, param="training_file"
    )
    validation = None
    if body.validation_file is not None:
        validation = _usable_file(
            reads, checks, tenant=tenant, file_id=body.validation_file, param="validation_file"
        )
    for file, param in ((training, "training_file"), (validation, "validation_file")):
        if file is not None:
            fmt = (file.report or {}).get("format")
            checks.require(
                gates.file_format_for_method(
                    file.id, file_format=fmt, method=body.training_method, param=param
                ),
                record=False,
            )
    sources = _usable_sources(
        reads,
        checks,
        tenant=tenant,
        files=[file for file in (training, validation) if file is not None],
        purpose=body.resolved_purpose,
    )
    _check_data(state, checks, training=training, validation=validation, sources=sources)
    exclusion = _exclusion(reads, checks, body=body, tenant=tenant, training=training)
    hyperparameters = body.requested_hyperparameters.model_dump()
    job_id = new_job_id()
    seed = body.seed if body.seed is not None else secrets.randbelow(2**31)
    return Plan(
        job_id=job_id,
        base=base,
        parent=parent,
        lora=lora,
        training=training,
        validation=validation,
        sources=sources,
        hyperparameters=hyperparameters,
        estimate=estimate(state, base=base, training=training, hyperparameters=hyperparameters),
        seed=seed,
        spec=train_spec(
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
            exclusion=exclusion,
        ),
    )


def _exclusion(
    session: Session, checks: Checks, *, body: JobCreate, tenant: str, training: TrainingFile
) -> dict[str, Any]:
    """exclude_lines_from: the source job's confirmed-wrong lines of this training file,
    read under ``read`` on that job (gateway.jobs.mislabels)."""
    if body.exclude_lines_from is None:
        return {}
    lines = mislabels.confirmed_wrong_lines(
        session, tenant=tenant, source_job_id=body.exclude_lines_from, training_file=training.id
    )
    checks.allow(f"job:{body.exclude_lines_from}", "read")
    return {"exclude_lines": lines, "exclude_lines_from": body.exclude_lines_from}


def _resolve_model(
    session: Session, checks: Checks, *, body: JobCreate, tenant: str
) -> tuple[ModelVersion | None, RegisteredBaseModel]:
    parent = None
    base_name = body.model
    if body.model.startswith("ft:"):
        parent = session.get(ModelVersion, body.model)
        if parent is None or parent.tenant != tenant:
            raise NotFound(f"model {body.model!r} not found", code="model_not_found", param="model")
        checks.allow(f"model:{parent.id}", "use")
        if parent.status == "retired":
            checks.refuse(
                InvalidRequest(
                    f"model {parent.id} is retired", code="model_retired", param="model"
                ),
                gate="model",
            )
        base_name = parent.base_model
    try:
        base = checks.state.usable_rows.base_model(
            session, base_name, read=lambda: base_models.get(session, name=base_name)
        )
    except NotFound:
        base = None
    if base is None or not base_models.visible_in(base, tenant):  # another tenant's own
        raise NotFound(f"model {body.model!r} not found", code="model_not_found", param="model")
    checks.allow(f"base:{base.name}", "train")
    checks.require(gates.base_model_active(base.name, status=base.status), record=False)
    return parent, base


def _lora_for(
    session: Session, checks: Checks, *, body: JobCreate, parent: ModelVersion | None
) -> dict[str, Any]:
    requested = body.lora.model_dump()
    if parent is None:
        return requested
    parent_job = session.get(FineTuningJob, parent.job_id)
    inherited = parent_job.lora if parent_job is not None else requested
    if "lora" in body.model_fields_set and requested != inherited:
        checks.refuse(
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
    session: Session, checks: Checks, *, tenant: str, file_id: str, param: str
) -> TrainingFile:
    try:
        file = checks.state.usable_rows.training_file(
            session,
            tenant,
            file_id,
            read=lambda: get_in_tenant_file(session, tenant=tenant, file_id=file_id),
        )
    except NotFound:
        raise NotFound(f"file {file_id!r} not found", code="file_not_found", param=param) from None
    path = stored_content(checks.state.settings, file)
    stored = path is not None and path.is_file()
    usable = gates.file_usable(file.id, status=file.status, stored=stored, param=param)
    checks.require(usable, record=False)
    checks.require(
        gates.file_for_training(file.id, purpose=file.purpose, param=param), record=False
    )
    return file


def _usable_sources(
    session: Session, checks: Checks, *, tenant: str, files: list[TrainingFile], purpose: str
) -> dict[str, DataSource]:
    """Each file's data source, once: the policy's ``train`` on it, still approved, and
    approved for this purpose."""
    sources: dict[str, DataSource] = {}
    for file in files:
        if file.data_source_id in sources:
            continue
        read = functools.partial(
            get_source, session, tenant=tenant, data_source_id=file.data_source_id
        )
        source = checks.state.usable_rows.data_source(
            session, tenant, file.data_source_id, read=read
        )
        checks.allow(f"ds:{source.id}", "train")
        checks.require(
            gates.source_approved(
                source.id,
                status=source.status,
                approved_by=source.approved_by,
                approval_policy_version=source.approval_policy_version,
            )
        )
        checks.require(
            gates.purpose_allowed(
                source.id, purpose=purpose, allowed_purposes=source.allowed_purposes
            )
        )
        sources[source.id] = source
    return sources


def _check_data(
    state: Runtime,
    checks: Checks,
    *,
    training: TrainingFile,
    validation: TrainingFile | None,
    sources: dict[str, DataSource],
) -> None:
    source = sources[training.data_source_id]
    minimum = source.min_examples
    checks.require(gates.enough_examples(training.examples, minimum=minimum))
    if source.max_conflict_rate is not None:  # a gate the source sets, recorded when it does
        checks.require(
            gates.conflict_rate(
                training.id, datasheet=training.report, maximum=source.max_conflict_rate
            )
        )
    if validation is None:
        return
    training_path = stored_content(state.settings, training)
    validation_path = stored_content(state.settings, validation)
    assert training_path is not None and validation_path is not None  # the file gate held
    checks.require(
        gates.no_overlap(
            fingerprint_path(training_path),
            fingerprint_path(validation_path),
            threshold=source.overlap_threshold,
            max_lines=source.max_overlapping_lines,
        )
    )


def estimate(
    state: Runtime,
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


def train_spec(
    state: Runtime,
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
    exclusion: dict[str, Any] | None = None,
) -> dict[str, Any]:
    settings = state.settings
    spec: dict[str, Any] = {
        "base_model_dir": str(base_models.model_dir(settings, base.name)),
        "training_file": str(stored_content(settings, training)),
        "validation_file": str(stored_content(settings, validation)) if validation else None,
        "output_dir": str(jobs_dir(state) / job_id),
        "hyperparameters": hyperparameters,
        "lora": lora,
        "evaluation": body.evaluation.model_dump(),
        "seed": seed,
        "method": body.training_method,
        "dpo": {"beta": body.dpo_beta},
        **checkpoint_policy(settings),
        "mislabels": body.mislabels.model_dump(),
        **(exclusion or {}),
    }
    if parent is not None:
        spec["init_adapter_dir"] = parent.artifact_dir
    try:
        return TrainSpec.from_dict(spec).to_dict()
    except (TypeError, ValueError) as exc:
        raise InvalidRequest(
            f"the job cannot be run as asked: {exc}", code="invalid_training_spec"
        ) from None


def checkpoint_policy(settings: Any) -> dict[str, Any]:
    """When a job's run writes checkpoints (what resumes after a lost worker or a pause,
    and what becomes the job's checkpoint models): at every epoch's end and when training
    ends, and every ``checkpoint_minutes`` in between (0: epoch ends only)."""
    minutes = settings.checkpoint_minutes
    return {"checkpoint_every_epoch": True, "checkpoint_every_minutes": minutes or None}
