from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Path, Query
from fastapi.responses import PlainTextResponse, Response, StreamingResponse
from sse_starlette.sse import EventSourceResponse

from gateway.audit_api import service
from gateway.audit_api.schemas import (
    AuditEventsPage,
    AuditVerification,
    CheckpointNotesPage,
    CheckpointPublic,
    ConsistencyProofPublic,
    InclusionProofPublic,
    PublicKey,
)
from gateway.authz import Authorized
from gateway.deps import SessionDep, StateDep, authorize

router = APIRouter(prefix="/v1/audit", tags=["audit"])

ReadAudit = Annotated[Authorized, authorize("audit", "read")]
MAX_SEQ = 2**53 - 1  # the largest integer canonical JSON (and so an audit body) holds
MAX_ROW_ID = 2**31 - 1  # an INTEGER primary key (audit_checkpoints.id) on PostgreSQL
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


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The refusals a route answers with, for its OpenAPI `responses=`."""
    meaning = {
        400: "invalid parameter (`error.code` says which, `error.param` names it)",
        401: "no valid bearer token",
        403: "the policy does not grant audit read (`permission_denied`)",
        404: "nothing to serve (`error.code` says what is missing)",
        503: "the audit trail cannot be brought up to date (`audit_sequencer_stalled`)",
    }
    return {status: {"description": meaning[status]} for status in statuses}


TEXT_PLAIN = "text/plain; charset=utf-8"
TLOG_PROOF = "tlog-proof"


@router.get(
    "/events/{seq}/proof",
    response_model=InclusionProofPublic,
    responses={
        200: {
            "content": {"text/plain": {}},
            "description": "the proof as JSON, or with `format=tlog-proof` (or `Accept: "
            "text/plain`) as a c2sp.org/tlog-proof whose `extra` line is the event body",
        },
        **_errors(400, 401, 403, 404, 503),
    },
)
def audit_inclusion_proof(
    seq: Annotated[int, Path(ge=1, le=MAX_SEQ)],
    session: SessionDep,
    state: StateDep,
    authorized: ReadAudit,
    tree_size: Annotated[int | None, Query(ge=1, le=MAX_SEQ)] = None,
    format: Annotated[
        Literal["json", "tlog-proof"] | None,
        Query(description="`tlog-proof`: a c2sp.org/tlog-proof text bundle (offline use)"),
    ] = None,
    accept: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> Any:
    wants_text = format == TLOG_PROOF or (format is None and _prefers_text(accept))
    if wants_text:
        text = service.inclusion_tlog_proof(
            session, state=state, authorized=authorized, seq=seq, tree_size=tree_size
        )
        return PlainTextResponse(text, media_type=TEXT_PLAIN)
    return service.inclusion_proof(
        session, state=state, authorized=authorized, seq=seq, tree_size=tree_size
    )


def _prefers_text(accept: str | None) -> bool:
    kinds = [part.split(";")[0].strip() for part in (accept or "").split(",")]
    return "text/plain" in kinds and "application/json" not in kinds


@router.get(
    "/checkpoints/latest", response_model=CheckpointPublic, responses=_errors(401, 403, 404, 503)
)
def latest_audit_checkpoint(session: SessionDep, state: StateDep, authorized: ReadAudit) -> dict:
    return service.latest_checkpoint(session, state=state, authorized=authorized)


@router.get(
    "/checkpoint",
    response_class=PlainTextResponse,
    responses={
        200: {
            "content": {"text/plain": {}},
            "description": "the newest checkpoint as a C2SP tlog-checkpoint signed note",
        },
        **_errors(401, 403, 404, 503),
    },
)
def latest_audit_checkpoint_note(
    session: SessionDep, state: StateDep, authorized: ReadAudit
) -> Response:
    """The newest checkpoint (signed now if none covers the trail) as a C2SP signed note:
    origin, tree size and base64 RFC 6962 root, then an Ed25519 signature line."""
    note = service.latest_checkpoint_note(session, state=state, authorized=authorized)
    return PlainTextResponse(note, media_type=TEXT_PLAIN)


@router.get(
    "/checkpoints", response_model=CheckpointNotesPage, responses=_errors(400, 401, 403, 503)
)
def list_audit_checkpoints(
    session: SessionDep,
    state: StateDep,
    authorized: ReadAudit,
    after: Annotated[
        int, Query(ge=0, le=MAX_ROW_ID, description="return checkpoints after this id (cursor)")
    ] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> CheckpointNotesPage:
    """Every checkpoint the gateway's key signed, oldest first, each as its signed note
    with the time it was signed."""
    items, next_after = service.checkpoint_history(
        session, state=state, authorized=authorized, after=after, limit=limit
    )
    return CheckpointNotesPage.model_validate(
        {"data": items, "has_more": next_after is not None, "next_after": next_after}
    )


@router.get(
    "/consistency",
    response_model=ConsistencyProofPublic,
    responses=_errors(400, 401, 403, 503),
)
def audit_consistency_proof(
    session: SessionDep,
    state: StateDep,
    authorized: ReadAudit,
    first: Annotated[int, Query(ge=0, le=MAX_SEQ, description="the older tree size")],
    second: Annotated[
        int | None,
        Query(ge=0, le=MAX_SEQ, description="the newer tree size (default: the current one)"),
    ] = None,
) -> dict:
    """An RFC 6962 / RFC 9162 consistency proof that the tree of `first` events is a
    prefix of the tree of `second` (both at most the current size), hashes in base64."""
    return service.consistency_proof(
        session, state=state, authorized=authorized, first=first, second=second
    )


@router.get("/public-key", response_model=PublicKey, responses=_errors(401, 403))
def audit_public_key(state: StateDep, _authorized: ReadAudit) -> PublicKey:
    notes = service.note_signer(state)
    return PublicKey(
        key_id=state.signer.key_id,
        public_key_pem=state.signer.public_key_pem().decode(),
        origin=notes.origin,
        key_name=notes.key_name,
        vkey=notes.vkey,
    )
