"""Promotion as a request, then an approval. Never commits.

Any engineer of the tenant with the `promote` grant asks for a candidate to go to
production, with a reason (and an override reason when its evaluation did not pass). A
compliance officer (the `approve` grant) who neither asked nor trained it approves, and
the model is promoted in the same transaction as the approval and its audit events; or
rejects. A flagged model is refused, at the request and again at the approval, until its
flags are cleared (gateway.registry.service.clear_flags) or a new version replaces it.

Each step keeps who took it and the policy version that allowed it; free text stays on the
row and only its sha256 goes to the audit trail. Every event's resource is the model
(`model:<id>`), so the model's dossier holds them."""

from __future__ import annotations

import hashlib
import secrets
import time
from typing import Any, NoReturn

import structlog
from sqlmodel import Session, col, select

from gateway.audit_api.service import record_allowed, record_refusal
from gateway.authz import Authorized, allows
from gateway.db import read_only
from gateway.errors import Conflict, Forbidden, NotFound
from gateway.pagination import visible_page
from gateway.registry import service as registry
from gateway.registry.models import ModelVersion, PromotionRequest
from gateway.registry.schemas import PROMOTION_REQUEST_ID
from gateway.runtime import Runtime
from gateway.security import Principal

log = structlog.get_logger()

VISIBLE_WITH = "read"


def new_request_id() -> str:
    return f"promreq-{secrets.token_hex(12)}"


def _sha256(text: str | None) -> str | None:
    return hashlib.sha256(text.encode()).hexdigest() if text is not None else None


def model_of(state: Runtime, principal: Principal, values: dict[str, str]) -> dict[str, str]:
    """The authorization resolver for /v1/promotion_requests/{request_id}...: a request is
    governed by its model. One that does not exist (or is another tenant's) resolves to
    the collection, so a caller with no grant at all is refused before learning more."""
    request_id = values.get("request_id", "")
    model_id = None
    if PROMOTION_REQUEST_ID.match(request_id):
        with Session(read_only(state.engine)) as session:
            model_id = session.scalars(
                select(col(PromotionRequest.model_id)).where(
                    col(PromotionRequest.id) == request_id,
                    col(PromotionRequest.tenant) == principal.tenant,
                )
            ).first()
    return {"model_id": model_id or "*"}


def get_in_tenant(
    session: Session, *, tenant: str, request_id: str, for_update: bool = False
) -> PromotionRequest:
    row = None
    if PROMOTION_REQUEST_ID.match(request_id):
        row = session.get(PromotionRequest, request_id, with_for_update=for_update)
    if row is None or row.tenant != tenant:
        raise NotFound(
            f"promotion request {request_id!r} not found",
            code="promotion_request_not_found",
            param="request_id",
        )
    return row


def get_visible(session: Session, *, authorized: Authorized, request_id: str) -> PromotionRequest:
    return get_in_tenant(session, tenant=authorized.principal.tenant, request_id=request_id)


def list_visible(
    session: Session,
    *,
    state: Runtime,
    authorized: Authorized,
    model_id: str | None,
    status: str | None,
    after: str | None,
    limit: int,
) -> tuple[list[PromotionRequest], bool]:
    """The tenant's requests whose model the caller may read, newest first, ``after`` a
    request id as the cursor."""
    principal = authorized.principal
    readable: dict[str, bool] = {}

    def may_read(row: PromotionRequest) -> bool:
        if row.model_id not in readable:
            readable[row.model_id] = allows(
                state.policy, principal, registry.policy_object(row.model_id), VISIBLE_WITH
            )
        return readable[row.model_id]

    query = select(PromotionRequest).where(col(PromotionRequest.tenant) == principal.tenant)
    if model_id is not None:
        query = query.where(col(PromotionRequest.model_id) == model_id)
    if status is not None:
        query = query.where(col(PromotionRequest.status) == status)
    cursor = None
    if after is not None:
        anchor = get_in_tenant(session, tenant=principal.tenant, request_id=after)
        cursor = (anchor.created_ns, anchor.id)
    return visible_page(
        session,
        query,
        keys=[col(PromotionRequest.created_ns), col(PromotionRequest.id)],
        descending=True,
        after=cursor,
        visible=may_read,
        limit=limit,
    )


# --- what a promotion needs of the model --------------------------------------------------


def require_promotable(row: ModelVersion) -> None:
    """A live, unflagged candidate: checked when the request is made and again when it is
    approved (a flag, a retirement or a delete may come in between)."""
    if row.deleted_at is not None:
        raise Conflict("the model was deleted", code="model_deleted")
    if row.status != "candidate":
        raise Conflict(
            f"model is {row.status}, not a candidate",
            code="not_candidate",
            details={"status": row.status},
        )
    if row.flags:
        raise Conflict(
            "the model is flagged for review: a compliance officer must clear its flags "
            "(POST /v1/models/{id}/clear_flag), or a new version replace it",
            code="model_flagged",
            details={"flags": [flag.get("reason") for flag in row.flags]},
        )


def _pending_of(session: Session, model_id: str) -> PromotionRequest | None:
    return session.scalars(
        select(PromotionRequest).where(
            col(PromotionRequest.model_id) == model_id, col(PromotionRequest.status) == "pending"
        )
    ).first()


def create(
    session: Session,
    *,
    authorized: Authorized,
    model_id: str,
    reason: str,
    override_reason: str | None,
) -> PromotionRequest:
    """A pending request. The evaluation verdict is quoted on it; a verdict other than
    "passed" needs an override reason. One pending request per model at a time."""
    principal = authorized.principal
    model = registry.get_in_tenant(
        session, tenant=principal.tenant, model_id=model_id, for_update=True
    )
    require_promotable(model)
    if model.verdict != "passed" and override_reason is None:
        raise Conflict(
            "the evaluation did not pass",
            code="evaluation_not_passed",
            details={
                "verdict": model.verdict,
                "hint": "ask with an override_reason to go ahead anyway",
            },
        )
    pending = _pending_of(session, model.id)
    if pending is not None:
        raise Conflict(
            f"the model already has a pending promotion request {pending.id}",
            code="promotion_pending",
            details={"request_id": pending.id},
        )
    now_ns = time.time_ns()
    row = PromotionRequest(
        id=new_request_id(),
        tenant=principal.tenant,
        model_id=model.id,
        status="pending",
        reason=reason,
        verdict=model.verdict,
        override_reason=override_reason if model.verdict != "passed" else None,
        trained_by=model.requested_by,
        requested_by=principal.sub,
        requested_at=now_ns // 1_000_000_000,
        created_ns=now_ns,
        request_policy_version=authorized.policy_version,
    )
    session.add(row)
    session.flush()
    record_allowed(
        session,
        authorized=authorized,
        action="model.promotion_requested",
        resource=registry.policy_object(model.id),
        details={
            "request_id": row.id,
            "model_id": model.id,
            "trained_by": row.trained_by,
            "verdict": row.verdict,
            "adapter_sha256": model.adapter_sha256,
            "reason_sha256": _sha256(row.reason),
            "override_reason_sha256": _sha256(row.override_reason),
        },
    )
    log.info("model.promotion_requested", request_id=row.id, model_id=model.id)
    return row


# --- deciding -----------------------------------------------------------------------------


def _refuse_four_eyes(
    session: Session,
    *,
    state: Runtime,
    authorized: Authorized,
    row: PromotionRequest,
    act: str,
    role: str,
) -> NoReturn:
    """Four eyes: the refusal is audited in a transaction of its own (the request's, which
    is about to roll back, is ended first: it frees SQLite's one write lock)."""
    request_id, model_id = row.id, row.model_id
    session.rollback()
    record_refusal(
        state,
        principal=authorized.principal,
        action=f"model.promotion_{act}_refused",
        resource=registry.policy_object(model_id),
        details={
            "code": "four_eyes_violation",
            "request_id": request_id,
            "model_id": model_id,
            "decider_is": role,
            "policy_version": authorized.policy_version,
        },
    )
    log.info("model.promotion_refused", request_id=request_id, role=role)
    who = "asked for the promotion" if role == "requester" else "trained the model"
    raise Forbidden(
        f"four eyes: whoever {who} cannot {act} its promotion",
        code="four_eyes_violation",
        details={"request_id": request_id, "decider_is": role},
    )


def _open_for_decision(
    session: Session, *, state: Runtime, authorized: Authorized, request_id: str, act: str
) -> tuple[PromotionRequest, ModelVersion]:
    """The pending request and its model, both locked: the model first, then the request,
    the order retiring and deleting a model take them in."""
    principal = authorized.principal
    row = get_in_tenant(session, tenant=principal.tenant, request_id=request_id)
    model = registry.get_in_tenant(
        session, tenant=row.tenant, model_id=row.model_id, for_update=True
    )
    session.refresh(row, with_for_update=True)
    if row.status != "pending":
        raise Conflict(
            f"the promotion request is already {row.status}",
            code="promotion_request_decided",
            details={"status": row.status, "decided_by": row.decided_by},
        )
    for role, who in (("requester", row.requested_by), ("trainer", row.trained_by)):
        if principal.sub == who:
            _refuse_four_eyes(
                session, state=state, authorized=authorized, row=row, act=act, role=role
            )
    return row, model


def _decide(
    row: PromotionRequest, *, authorized: Authorized, status: str, reason: str | None
) -> None:
    row.status = status
    row.decided_by = authorized.principal.sub
    row.decided_at = int(time.time())
    row.decision_reason = reason
    row.decision_policy_version = authorized.policy_version


def _decision_details(row: PromotionRequest, model: ModelVersion) -> dict[str, Any]:
    return {
        "request_id": row.id,
        "model_id": model.id,
        "requested_by": row.requested_by,
        "trained_by": row.trained_by,
        "request_policy_version": row.request_policy_version,
        "verdict": row.verdict,
        "adapter_sha256": model.adapter_sha256,
        "decision_reason_sha256": _sha256(row.decision_reason),
    }


def approve(
    session: Session,
    *,
    state: Runtime,
    authorized: Authorized,
    request_id: str,
    reason: str | None,
) -> PromotionRequest:
    """Approves and promotes: the request, the model and both audit events in one
    transaction. The model is checked again (it may have been flagged since)."""
    row, model = _open_for_decision(
        session, state=state, authorized=authorized, request_id=request_id, act="approve"
    )
    require_promotable(model)
    _decide(row, authorized=authorized, status="approved", reason=reason)
    model.status = "production"
    model.promoted_by = authorized.principal.sub
    model.promoted_at = row.decided_at
    model.promotion_override_reason = row.override_reason
    session.add_all([row, model])
    session.flush()
    details = _decision_details(row, model)
    resource = registry.policy_object(model.id)
    record_allowed(
        session,
        authorized=authorized,
        action="model.promotion_approved",
        resource=resource,
        details=details,
    )
    record_allowed(
        session,
        authorized=authorized,
        action="model.promoted",
        resource=resource,
        details={
            **details,
            "approved_by": authorized.principal.sub,
            "overridden": [] if row.verdict == "passed" else ["evaluation_not_passed"],
            "override_reason_sha256": _sha256(row.override_reason),
        },
    )
    log.info("model.promoted", model_id=model.id, request_id=row.id)
    return row


def reject(
    session: Session,
    *,
    state: Runtime,
    authorized: Authorized,
    request_id: str,
    reason: str,
) -> PromotionRequest:
    row, model = _open_for_decision(
        session, state=state, authorized=authorized, request_id=request_id, act="reject"
    )
    _decide(row, authorized=authorized, status="rejected", reason=reason)
    session.add(row)
    session.flush()
    record_allowed(
        session,
        authorized=authorized,
        action="model.promotion_rejected",
        resource=registry.policy_object(model.id),
        details=_decision_details(row, model),
    )
    log.info("model.promotion_rejected", model_id=model.id, request_id=row.id)
    return row
