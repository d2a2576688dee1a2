"""Re-evaluation after release: the held-out evaluation set and the OOD probe of a model
version run again on its registered adapter, compared with the figures it was promoted
on, and the version flagged ``degraded`` when they fell.

A re-evaluation is governed like a job: a row that goes queued -> running -> succeeded |
failed with its progress, the decision that allowed it (the policy's, on demand; the
schedule's setting, when it was due), and audit events on the model when it is asked
for, when it starts and when it ends. The run itself (gateway.reevaluation.evaluation:
the trainer's own setup and evaluation, with the registered adapter loaded) happens in the
gateway's re-evaluation thread (gateway.reevaluation.runner), which calls ``claim_next``
and ``run``; those two own their transactions. The request and list functions never
commit (the request scope does).
"""

from __future__ import annotations

import math
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import structlog
from sqlalchemy import Engine, update
from sqlmodel import Session, col, select

from audit.encoding import now_ts
from gateway.audit_api.service import record, record_allowed
from gateway.authz import Authorized
from gateway.config import Settings
from gateway.db import after_commit, read_only
from gateway.errors import Conflict
from gateway.executors.run import JobRefused
from gateway.jobs.models import FineTuningJob
from gateway.pagination import visible_page
from gateway.reevaluation.models import ACTIVE_STATUSES, Reevaluation
from gateway.registry import service as registry
from gateway.registry.models import ModelVersion
from trainer.hashing import sha256_file

log = structlog.get_logger()

SYSTEM_ACTOR = "system:reevaluation"
DEGRADED = "degraded"
# The metrics of the tuned system compared with the ones at promotion, where both have them
# (supervised runs: exact match and token F1; DPO runs: preference accuracy).
TASK_METRICS = ("exact_match", "token_f1", "preference_accuracy")
ADAPTER_WEIGHTS = ("adapter/adapter_model.safetensors", "adapter_model.safetensors")
# A metric equal to the promotion figure up to float noise is unchanged.
EPSILON = 1e-9


class Evaluate(Protocol):
    """Runs the evaluation of a job's spec with the adapter in ``adapter_dir``; returns the
    report (trainer.evaluate's shape). ``progress(share)`` reports 0..1; ``check_stop``
    raises to stop between batches."""

    def __call__(
        self,
        spec: Mapping[str, Any],
        adapter_dir: Path,
        *,
        progress: Callable[[float], None],
        check_stop: Callable[[], None],
    ) -> dict[str, Any]: ...


class Interrupted(Exception):
    """The gateway is stopping: the re-evaluation goes back to the queue."""


def _audited(value: Any) -> Any:
    """The audit trail takes no floats: figures go in as their shortest exact text."""
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, Mapping):
        return {key: _audited(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_audited(item) for item in value]
    return value


def policy_object(model_id: str) -> str:
    return registry.policy_object(model_id)


def _new_id() -> str:
    return f"reeval-{secrets.token_hex(12)}"


# --- asking for one -------------------------------------------------------------------------


def _check_can_reevaluate(session: Session, row: ModelVersion) -> None:
    if row.deleted_at is not None:
        raise Conflict("the model was deleted: its adapter is gone", code="model_deleted")
    if row.status == "retired":
        raise Conflict("the model is retired", code="model_retired")
    if not isinstance(row.evaluation, dict) or "systems" not in row.evaluation:
        raise Conflict(
            "the model has no evaluation from its training run to compare with",
            code="no_evaluation_to_compare",
        )
    active = session.scalars(
        select(Reevaluation).where(
            col(Reevaluation.model_id) == row.id, col(Reevaluation.status).in_(ACTIVE_STATUSES)
        )
    ).first()
    if active is not None:
        raise Conflict(
            "a re-evaluation of the model is already queued or running",
            code="reevaluation_in_progress",
            details={"reevaluation_id": active.id, "status": active.status},
        )


def _queued(
    row: ModelVersion, *, trigger: str, requested_by: str, decision: dict[str, Any]
) -> Reevaluation:
    return Reevaluation(
        id=_new_id(),
        tenant=row.tenant,
        model_id=row.id,
        trigger=trigger,
        requested_by=requested_by,
        created_at=int(time.time()),
        created_ns=time.time_ns(),
        status="queued",
        progress=0.0,
        phase="queued",
        decision=decision,
        adapter_sha256=row.adapter_sha256,
    )


def _requested_details(reevaluation: Reevaluation, row: ModelVersion) -> dict[str, Any]:
    return {
        "model_id": row.id,
        "reevaluation_id": reevaluation.id,
        "trigger": reevaluation.trigger,
        "status": row.status,
        "adapter_sha256": row.adapter_sha256,
    }


def request(
    session: Session,
    *,
    authorized: Authorized,
    model_id: str,
    wake: Callable[[], None] | None = None,
) -> Reevaluation:
    """POST /v1/models/{id}/reevaluations: queues a re-evaluation of the version (not
    deleted, not retired, evaluated when it was trained; one at a time), audited with the
    decision that allowed it. ``wake`` (the runner's) is called once this commits."""
    principal = authorized.principal
    row = registry.get_in_tenant(
        session, tenant=principal.tenant, model_id=model_id, for_update=True
    )
    _check_can_reevaluate(session, row)
    reevaluation = _queued(
        row,
        trigger="on_demand",
        requested_by=principal.sub,
        decision=authorized.decision_record(),
    )
    session.add(reevaluation)
    session.flush()
    record_allowed(
        session,
        authorized=authorized,
        action="model.reevaluation_requested",
        resource=policy_object(row.id),
        details=_requested_details(reevaluation, row),
    )
    if wake is not None:
        after_commit(session, wake)
    log.info("model.reevaluation_requested", model_id=row.id, reevaluation_id=reevaluation.id)
    return reevaluation


def list_for_model(
    session: Session, *, authorized: Authorized, model_id: str, after: str | None, limit: int
) -> tuple[list[Reevaluation], bool]:
    """GET /v1/models/{id}/reevaluations: the version's re-evaluations, newest first."""
    row = registry.get_in_tenant(session, tenant=authorized.principal.tenant, model_id=model_id)
    cursor = None
    if after is not None:
        anchor = session.get(Reevaluation, after)
        if anchor is not None and anchor.model_id == row.id:
            cursor = (anchor.created_ns, anchor.id)
    return visible_page(
        session,
        select(Reevaluation).where(col(Reevaluation.model_id) == row.id),
        keys=[col(Reevaluation.created_ns), col(Reevaluation.id)],
        after=cursor,
        visible=lambda _: True,
        limit=limit,
        descending=True,
    )


def for_model(session: Session, model_id: str) -> list[Reevaluation]:
    """Every re-evaluation of the version, oldest first (the dossier's)."""
    return list(
        session.scalars(
            select(Reevaluation)
            .where(col(Reevaluation.model_id) == model_id)
            .order_by(col(Reevaluation.created_ns), col(Reevaluation.id))
        ).all()
    )


# --- the schedule ---------------------------------------------------------------------------


def schedule_due(
    session: Session, *, settings: Settings, policy_version: str | None, now: float | None = None
) -> list[str]:
    """Queues a re-evaluation of every production version (with an evaluation to compare
    with) whose promotion, or last re-evaluation, is ``reevaluate_every_days`` old; returns
    the new re-evaluations' ids. Each is audited as asked for by the schedule."""
    every_days = settings.reevaluate_every_days
    if every_days <= 0:
        return []
    now = time.time() if now is None else now
    period = every_days * 86_400
    rows = session.scalars(
        select(ModelVersion)
        .where(col(ModelVersion.status) == "production", col(ModelVersion.deleted_at).is_(None))
        .order_by(col(ModelVersion.id))
    ).all()
    queued: list[str] = []
    for row in rows:
        if not isinstance(row.evaluation, dict) or "systems" not in row.evaluation:
            continue
        earlier = for_model(session, row.id)
        if any(item.status in ACTIVE_STATUSES for item in earlier):
            continue
        last = max([item.created_at for item in earlier] + [row.promoted_at or row.created_at])
        if now - last < period:
            continue
        decision = {
            "kind": "schedule",
            "setting": "reevaluate_every_days",
            "value": every_days,
            "allowed": True,
            "policy_version": policy_version,
        }
        reevaluation = _queued(
            row, trigger="schedule", requested_by=SYSTEM_ACTOR, decision=decision
        )
        session.add(reevaluation)
        session.flush()
        record(
            session,
            actor=SYSTEM_ACTOR,
            tenant=row.tenant,
            action="model.reevaluation_requested",
            resource=policy_object(row.id),
            decision="allow",
            policy_version=policy_version,
            details={**_requested_details(reevaluation, row), "every_days": every_days},
        )
        queued.append(reevaluation.id)
    if queued:
        log.info("model.reevaluations_scheduled", count=len(queued))
    return queued


# --- running one ----------------------------------------------------------------------------


def requeue_interrupted(engine: Engine) -> int:
    """At start-up: re-evaluations a stopped gateway left running go back to the queue."""
    with Session(engine) as session:
        result = session.execute(
            update(Reevaluation)
            .where(col(Reevaluation.status) == "running")
            .values(status="queued", phase="queued", progress=0.0, started_at=None)
        )
        session.commit()
    return int(getattr(result, "rowcount", 0) or 0)


def claim_next(engine: Engine) -> str | None:
    """The oldest queued re-evaluation, now running (audited as started); None when none
    is queued. The conditional update makes two runners never claim the same one."""
    with Session(read_only(engine)) as session:
        candidate = session.scalars(
            select(Reevaluation.id)
            .where(col(Reevaluation.status) == "queued")
            .order_by(col(Reevaluation.created_ns), col(Reevaluation.id))
            .limit(1)
        ).first()
    if candidate is None:
        return None
    with Session(engine) as session:
        claimed = session.execute(
            update(Reevaluation)
            .where(col(Reevaluation.id) == candidate, col(Reevaluation.status) == "queued")
            .values(status="running", phase="loading", progress=0.0, started_at=int(time.time()))
        )
        if not getattr(claimed, "rowcount", 0):
            session.rollback()
            return None
        row = session.get(Reevaluation, candidate)
        assert row is not None
        record(
            session,
            actor=SYSTEM_ACTOR,
            tenant=row.tenant,
            action="model.reevaluation_started",
            resource=policy_object(row.model_id),
            decision="allow",
            policy_version=row.decision.get("policy_version"),
            details={
                "model_id": row.model_id,
                "reevaluation_id": row.id,
                "trigger": row.trigger,
            },
        )
        session.commit()
    return candidate


def _weights_sha256(adapter_dir: Path) -> str | None:
    for relative in ADAPTER_WEIGHTS:
        path = adapter_dir / relative
        if path.is_file():
            return sha256_file(path)
    return None


def _inputs(engine: Engine, reevaluation_id: str) -> tuple[Reevaluation, ModelVersion, dict]:
    """The row, its model version and the job's training spec, checked: the adapter bytes
    are the registered ones and the data the evaluation reads is still there."""
    with Session(read_only(engine), expire_on_commit=False) as session:
        reevaluation = session.get(Reevaluation, reevaluation_id)
        assert reevaluation is not None
        model = session.get(ModelVersion, reevaluation.model_id)
        assert model is not None
        job = session.get(FineTuningJob, model.job_id)
        spec = dict(job.spec) if job is not None and job.spec else {}
    if model.deleted_at is not None:
        raise JobRefused("reevaluation_adapter_mismatch", "the model's adapter was deleted")
    found = _weights_sha256(Path(model.artifact_dir))
    if found is None or found != model.adapter_sha256 or found != reevaluation.adapter_sha256:
        raise JobRefused(
            "reevaluation_adapter_mismatch",
            "the adapter on disk is not the one the registry holds for this version",
        )
    if not spec:
        raise JobRefused(
            "evaluation_data_unavailable", "the job that trained the model recorded no spec"
        )
    for key in ("base_model_dir", "training_file", "validation_file"):
        value = spec.get(key)
        if value and not Path(str(value)).exists():
            raise JobRefused(
                "evaluation_data_unavailable",
                f"the run's {key.replace('_', ' ')} is no longer stored (erased or deleted)",
            )
    return reevaluation, model, spec


def _set_progress(engine: Engine, reevaluation_id: str, *, phase: str, progress: float) -> None:
    with Session(engine) as session:
        session.execute(
            update(Reevaluation)
            .where(col(Reevaluation.id) == reevaluation_id, col(Reevaluation.status) == "running")
            .values(phase=phase, progress=round(min(max(progress, 0.0), 1.0), 4))
        )
        session.commit()


class _Progress:
    """Writes the evaluation's progress at most once a second."""

    def __init__(self, engine: Engine, reevaluation_id: str) -> None:
        self.engine, self.reevaluation_id, self.written = engine, reevaluation_id, 0.0

    def __call__(self, share: float) -> None:
        now = time.monotonic()
        if now - self.written >= 1.0:
            self.written = now
            _set_progress(
                self.engine, self.reevaluation_id, phase="evaluating", progress=0.05 + 0.9 * share
            )


def run(
    engine: Engine,
    *,
    settings: Settings,
    reevaluation_id: str,
    evaluate: Evaluate | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> str:
    """Runs a claimed re-evaluation to its end: succeeded (and compared, the version flagged
    when it degraded), failed, or queued again when ``should_stop`` interrupted it."""
    if evaluate is None:
        from gateway.reevaluation.evaluation import evaluate_adapter

        evaluate = evaluate_adapter

    def check_stop() -> None:
        if should_stop():
            raise Interrupted

    try:
        reevaluation, model, spec = _inputs(engine, reevaluation_id)
        _set_progress(engine, reevaluation_id, phase="evaluating", progress=0.05)
        report = evaluate(
            spec,
            Path(model.artifact_dir),
            progress=_Progress(engine, reevaluation_id),
            check_stop=check_stop,
        )
    except Interrupted:
        _requeue(engine, reevaluation_id)
        return "queued"
    except JobRefused as exc:
        return _fail(engine, reevaluation_id, exc.code, exc.message)
    except Exception as exc:
        log.error(
            "model.reevaluation_error",
            reevaluation_id=reevaluation_id,
            error_type=type(exc).__name__,
            exc_info=True,
        )
        refused = JobRefused("reevaluation_error", f"the evaluation failed ({type(exc).__name__})")
        return _fail(engine, reevaluation_id, refused.code, refused.message)
    _set_progress(engine, reevaluation_id, phase="comparing", progress=0.97)
    comparison = compare(
        model.evaluation or {},
        report,
        max_drop=settings.reevaluation_max_drop,
        max_ood_increase=settings.reevaluation_max_ood_increase,
    )
    return _succeed(engine, reevaluation_id, report=report, comparison=comparison)


def _requeue(engine: Engine, reevaluation_id: str) -> None:
    with Session(engine) as session:
        session.execute(
            update(Reevaluation)
            .where(col(Reevaluation.id) == reevaluation_id)
            .values(status="queued", phase="queued", progress=0.0, started_at=None)
        )
        session.commit()
    log.info("model.reevaluation_requeued", reevaluation_id=reevaluation_id)


def _fail(engine: Engine, reevaluation_id: str, code: str, message: str) -> str:
    with Session(engine) as session:
        row = session.get(Reevaluation, reevaluation_id, with_for_update=True)
        assert row is not None
        row.status, row.phase, row.finished_at = "failed", "done", int(time.time())
        row.error = {"code": code, "message": message}
        session.add(row)
        record(
            session,
            actor=SYSTEM_ACTOR,
            tenant=row.tenant,
            action="model.reevaluation_failed",
            resource=policy_object(row.model_id),
            decision="allow",
            policy_version=row.decision.get("policy_version"),
            details={"model_id": row.model_id, "reevaluation_id": row.id, "code": code},
        )
        session.commit()
    log.warning("model.reevaluation_failed", reevaluation_id=reevaluation_id, code=code)
    return "failed"


def _succeed(
    engine: Engine, reevaluation_id: str, *, report: dict[str, Any], comparison: dict[str, Any]
) -> str:
    """The report, the comparison and (when it degraded) the version's flag and its
    `model.degraded` event, in one transaction."""
    degraded = bool(comparison["degraded"])
    with Session(engine) as session:
        row = session.get(Reevaluation, reevaluation_id, with_for_update=True)
        assert row is not None
        model = session.get(ModelVersion, row.model_id, with_for_update=True)
        assert model is not None
        row.status, row.phase, row.progress = "succeeded", "done", 1.0
        row.finished_at = int(time.time())
        row.report, row.comparison, row.degraded = report, comparison, degraded
        session.add(row)
        summary = {
            "model_id": model.id,
            "reevaluation_id": row.id,
            "degraded": degraded,
            "metrics": {m["name"]: m["now"] for m in comparison["metrics"]},
            "ood_loss": comparison["ood_probe"]["now"] if comparison["ood_probe"] else None,
        }
        event: dict[str, Any] = {
            "actor": SYSTEM_ACTOR,
            "tenant": row.tenant,
            "resource": policy_object(model.id),
            "decision": "allow",
            "policy_version": row.decision.get("policy_version"),
        }
        record(session, action="model.reevaluation_succeeded", details=_audited(summary), **event)
        if degraded:
            flag = degraded_flag(row.id, comparison)
            model.flags = [*model.flags, flag]  # a new list, so the JSON column sees it
            session.add(model)
            record(
                session,
                action="model.degraded",
                details=_audited(
                    {
                        "model_id": model.id,
                        "reevaluation_id": row.id,
                        "status": model.status,
                        "reason": DEGRADED,
                        "metrics": flag["metrics"],
                        "ood_probe": flag["ood_probe"],
                    }
                ),
                **event,
            )
        session.commit()
    log.info("model.reevaluation_succeeded", reevaluation_id=reevaluation_id, degraded=degraded)
    if degraded:
        log.warning("model.degraded", reevaluation_id=reevaluation_id)
    return "succeeded"


# --- comparing ------------------------------------------------------------------------------


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def compare(
    at_promotion: Mapping[str, Any],
    now: Mapping[str, Any],
    *,
    max_drop: float,
    max_ood_increase: float,
) -> dict[str, Any]:
    """The tuned system's task metrics now against the figures at promotion (degraded when
    one fell by more than ``max_drop``, absolute), and the OOD probe's loss with the adapter
    on (degraded when it rose by more than ``max_ood_increase``, relative)."""
    then_tuned = (at_promotion.get("systems") or {}).get("tuned") or {}
    now_tuned = (now.get("systems") or {}).get("tuned") or {}
    metrics = []
    for name in TASK_METRICS:
        before, after = _number(then_tuned.get(name)), _number(now_tuned.get(name))
        if before is None or after is None:
            continue
        change = after - before
        metrics.append(
            {
                "name": name,
                "at_promotion": before,
                "now": after,
                "change": change,
                "limit": -max_drop,
                "degraded": change < -max_drop - EPSILON,
            }
        )
    ood: dict[str, Any] | None = None
    before = _number((at_promotion.get("ood_probe") or {}).get("loss_after"))
    after = _number((now.get("ood_probe") or {}).get("loss_after"))
    if before is not None and after is not None and before > 0:
        change = (after - before) / before
        ood = {
            "at_promotion": before,
            "now": after,
            "relative_change": change,
            "limit": max_ood_increase,
            "degraded": change > max_ood_increase + EPSILON,
        }
    return {
        "metrics": metrics,
        "ood_probe": ood,
        "max_drop": max_drop,
        "max_ood_increase": max_ood_increase,
        "degraded": any(m["degraded"] for m in metrics) or bool(ood and ood["degraded"]),
    }


def degraded_flag(reevaluation_id: str, comparison: Mapping[str, Any]) -> dict[str, Any]:
    """The version's `degraded` flag: the re-evaluation that raised it and the numbers that
    fell (cleared like any flag, by a compliance officer's review)."""
    fallen: Sequence[dict[str, Any]] = [m for m in comparison["metrics"] if m["degraded"]]
    ood = comparison["ood_probe"]
    return {
        "reason": DEGRADED,
        "ref": reevaluation_id,
        "at": now_ts(),
        "via": "reevaluation",
        "metrics": [
            {key: m[key] for key in ("name", "at_promotion", "now", "change")} for m in fallen
        ],
        "ood_probe": ood if ood is not None and ood["degraded"] else None,
    }
