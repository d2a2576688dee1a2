from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query
from fastapi.responses import StreamingResponse
from sse_starlette.sse import EventSourceResponse

from gateway.audit_api import service
from gateway.audit_api.schemas import (
    AuditEventsPage,
    AuditVerification,
    CheckpointPublic,
    InclusionProofPublic,
    PublicKey,
)
from gateway.authz import Authorized
from gateway.deps import SessionDep, StateDep, authorize

router = APIRouter(prefix="/v1/audit", tags=["audit"])

ReadAudit = Annotated[Authorized, authorize("audit", "read")]
MAX_SEQ = 2**53 - 1  # the largest integer canonical JSON (and so an audit body) holds
SeqParam = Annotated[
    int, Query(ge=0, le=MAX_SEQ, description="return events after this seq (cursor)")
]
# No control characters: PostgreSQL text cannot hold NUL, and filters are ids anyway.
TextFilter = Annotated[str | None, Query(max_length=512, pattern=r"^[^\x00-\x1f\x7f]*$")]
TimeFilter = Annotated[
    str | None, Query(max_length=40, description="RFC 3339 time, e.g. 2026-11-28T12:00:00Z")
]


def _filters(actor, action, resource, tenant, decision, since, until) -> dict:
    return {
        "actor": actor,
        "action": action,
        "resource": resource,
        "tenant": tenant,
        "decision": decision,
        "since": since,
        "until": until,
    }


@router.get("/events", response_model=AuditEventsPage)
def list_audit_events(
    session: SessionDep,
    state: StateDep,
    authorized: ReadAudit,
    after: SeqParam = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    actor: TextFilter = None,
    action: TextFilter = None,
    resource: TextFilter = None,
    tenant: TextFilter = None,
    decision: Literal["allow", "deny", "error"] | None = None,
    since: TimeFilter = None,
    until: TimeFilter = None,
) -> AuditEventsPage:
    page = service.list_events(
        session,
        state=state,
        authorized=authorized,
        after=after,
        limit=limit,
        filters=_filters(actor, action, resource, tenant, decision, since, until),
    )
    return AuditEventsPage(
        data=page.events, has_more=page.next_after is not None, next_after=page.next_after
    )


@router.get("/verify", response_model=AuditVerification)
def verify_audit_chain(
    session: SessionDep,
    state: StateDep,
    authorized: Annotated[Authorized, authorize("audit", "verify")],
) -> AuditVerification:
    result = service.verify_chain(session, state=state, authorized=authorized)
    return AuditVerification(**result.to_dict())


@router.get(
    "/verify/stream",
    response_class=EventSourceResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
def stream_audit_verification(
    state: StateDep,
    authorized: Annotated[Authorized, authorize("audit", "verify")],
) -> EventSourceResponse:
    """GET /v1/audit/verify as server-sent events: `progress` events `{"checked",
    "total"}` while the chain is verified (the first at once), then one `result` event
    with the verification (or an `error` event)."""
    updates = service.verify_with_progress(state, authorized=authorized)
    return EventSourceResponse(service.verification_events(updates))


@router.get(
    "/export",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/x-ndjson": {}}}},
)
def export_audit_events(
    session: SessionDep,
    state: StateDep,
    authorized: Annotated[Authorized, authorize("audit", "export")],
    after: SeqParam = 0,
    actor: TextFilter = None,
    action: TextFilter = None,
    resource: TextFilter = None,
    tenant: TextFilter = None,
    decision: Literal["allow", "deny", "error"] | None = None,
    since: TimeFilter = None,
    until: TimeFilter = None,
    proof: Annotated[
        bool,
        Query(
            description="end with a trailer line that proves the events under a signed "
            "checkpoint (`tunegate audit verify-export` checks it offline)"
        ),
    ] = False,
) -> StreamingResponse:
    filters = _filters(actor, action, resource, tenant, decision, since, until)
    if proof:
        proven = service.export_events_proven(
            session, state=state, authorized=authorized, after=after, filters=filters
        )
        return StreamingResponse(
            proven.lines,
            media_type="application/x-ndjson",
            headers={"X-Audit-Tree-Size": str(proven.tree_size)},
        )
    lines = service.export_events(
        session,
        state=state,
        authorized=authorized,
        after=after,
        filters=filters,
    )
    return StreamingResponse(lines, media_type="application/x-ndjson")


@router.get("/events/{seq}/proof", response_model=InclusionProofPublic)
def audit_inclusion_proof(
    seq: Annotated[int, Path(ge=1, le=MAX_SEQ)],
    session: SessionDep,
    state: StateDep,
    authorized: ReadAudit,
    tree_size: Annotated[int | None, Query(ge=1, le=MAX_SEQ)] = None,
) -> dict:
    return service.inclusion_proof(
        session, state=state, authorized=authorized, seq=seq, tree_size=tree_size
    )


@router.get("/checkpoints/latest", response_model=CheckpointPublic)
def latest_audit_checkpoint(session: SessionDep, state: StateDep, authorized: ReadAudit) -> dict:
    return service.latest_checkpoint(session, state=state, authorized=authorized).to_json()


@router.get("/public-key", response_model=PublicKey)
def audit_public_key(state: StateDep, _authorized: ReadAudit) -> PublicKey:
    return PublicKey(
        key_id=state.signer.key_id, public_key_pem=state.signer.public_key_pem().decode()
    )
