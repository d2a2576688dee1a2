"""Audit pages (compliance officers): the trail, filtered and paged by sequence number, and
one event with its canonical JSON and hashes."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Path, Request
from fastapi.responses import HTMLResponse, Response, StreamingResponse
from sse_starlette.sse import EventSourceResponse

from audit.encoding import canonical_json
from gateway.audit_api import service
from gateway.authz import Authorized
from gateway.console import audit as views
from gateway.console import exports
from gateway.console.deps import console_authorize
from gateway.console.render import render
from gateway.deps import SessionDep, StateDep
from gateway.errors import InvalidRequest

router = APIRouter(prefix="/console/audit")

ReadAudit = Annotated[Authorized, console_authorize("audit", "read")]


@router.get("", response_class=HTMLResponse, include_in_schema=False)
def events_page(
    request: Request, session: SessionDep, state: StateDep, authorized: ReadAudit
) -> HTMLResponse:
    filters, errors = views.parse_filters(request.query_params)
    after = views.parse_after(request.query_params.get("after"))
    page = None
    if not errors:
        page = service.list_events(
            session,
            state=state,
            authorized=authorized,
            after=after,
            limit=views.PAGE,
            filters=filters,
        )
    return render(
        request,
        "audit_events.html",
        state=state,
        principal=authorized.principal,
        status_code=422 if errors else 200,
        filter_fields=views.FILTER_FIELDS,
        filters={name: filters.get(name) for name, _ in views.FILTER_FIELDS}
        | {"decision": filters.get("decision", "")},
        errors=errors,
        failure="",
        after=after,
        events=page.events if page else [],
        next_href=views.next_href(filters, page.next_after) if page else None,
        export_query=("?" + urlencode(filters) if filters else "") if not errors else None,
    )


@router.get("/events/{seq}", response_class=HTMLResponse, include_in_schema=False)
def event_page(
    request: Request,
    session: SessionDep,
    state: StateDep,
    authorized: ReadAudit,
    seq: Annotated[int, Path(ge=1, le=2**53 - 1)],
) -> HTMLResponse:
    event = service.get_event(session, state=state, authorized=authorized, seq=seq)
    body = {key: value for key, value in event.items() if key not in {"hash", "prev_hash"}}
    return render(
        request,
        "audit_event.html",
        state=state,
        principal=authorized.principal,
        event=event,
        canonical=canonical_json(body).decode(),
    )


@router.get("/verify", response_class=HTMLResponse, include_in_schema=False)
def verify_page(
    request: Request,
    state: StateDep,
    authorized: Annotated[Authorized, console_authorize("audit", "verify")],
) -> HTMLResponse:
    return render(request, "audit_verify.html", state=state, principal=authorized.principal)


@router.get("/verify/stream", include_in_schema=False)
def verify_stream(
    state: StateDep,
    authorized: Annotated[Authorized, console_authorize("audit", "verify")],
) -> EventSourceResponse:
    """The API's verification with progress, for the page's own script."""
    updates = service.verify_with_progress(state, authorized=authorized)
    return EventSourceResponse(service.verification_events(updates))


def _export(session, state, authorized, request: Request):
    filters, errors = views.parse_filters(request.query_params)
    if errors:
        field, message = next(iter(errors.items()))
        raise InvalidRequest(f"{field}: {message}", code="invalid_filter", param=field)
    return service.export_events(
        session, state=state, authorized=authorized, after=0, filters=filters
    )


ExportAudit = Annotated[Authorized, console_authorize("audit", "export")]


@router.get("/export.jsonl", include_in_schema=False)
def export_jsonl(
    request: Request, session: SessionDep, state: StateDep, authorized: ExportAudit
) -> StreamingResponse:
    lines = _export(session, state, authorized, request)
    return StreamingResponse(
        lines,
        media_type="application/x-ndjson",
        headers={"Content-Disposition": 'attachment; filename="audit-events.jsonl"'},
    )


@router.get("/export.csv", include_in_schema=False)
def export_csv(
    request: Request, session: SessionDep, state: StateDep, authorized: ExportAudit
) -> StreamingResponse:
    lines = _export(session, state, authorized, request)
    return StreamingResponse(
        exports.csv_lines(lines),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="audit-events.csv"'},
    )


@router.get("/events/{seq}/bundle.tar", include_in_schema=False)
def proof_bundle(
    session: SessionDep,
    state: StateDep,
    authorized: ReadAudit,
    seq: Annotated[int, Path(ge=1, le=2**53 - 1)],
) -> Response:
    checkpoint = service.latest_checkpoint(session, state=state, authorized=authorized)
    note = checkpoint.pop("signed_note")
    proof = service.inclusion_proof(
        session, state=state, authorized=authorized, seq=seq, tree_size=checkpoint["tree_size"]
    )
    bundle = exports.proof_bundle(
        proof=proof,
        checkpoint=checkpoint,
        signed_note=note,
        public_key_pem=state.signer.public_key_pem(),
    )
    return Response(
        bundle,
        media_type="application/x-tar",
        headers={"Content-Disposition": f'attachment; filename="audit-proof-{seq}.tar"'},
    )
