"""Erasure requests: the list, the form that files one, a request's page (its search's
progress, polled while it is open) and the decision, each through the API's service and
its authorization objects and actions."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from gateway.authz import Authorized, allows
from gateway.console import erasure as views
from gateway.console.deps import FormDep, console_authorize
from gateway.console.forms import checked
from gateway.console.render import render
from gateway.deps import SessionDep, StateDep
from gateway.erasure import service
from gateway.erasure.schemas import ErasureDecide, ErasureRequestCreate, ErasureRequestPublic

router = APIRouter(prefix="/console/erasure")
Cursor = Annotated[str | None, Query(max_length=64, pattern=r"^[A-Za-z0-9._-]*$")]
RequestId = Annotated[str, Path(max_length=64)]
PAGE = 50


@router.get("", response_class=HTMLResponse, include_in_schema=False)
def list_page(
    request: Request,
    session: SessionDep,
    state: StateDep,
    authorized: Annotated[Authorized, console_authorize("erasure:*", "list")],
    status: Annotated[str | None, Query(max_length=16)] = None,
    after: Cursor = None,
) -> HTMLResponse:
    wanted = views.status_filter(status)
    rows, next_after = service.list_in_tenant(
        session, authorized=authorized, status=wanted, after=after or None, limit=PAGE
    )
    query = {"status": wanted} if wanted else {}
    requests = [ErasureRequestPublic.model_validate(row) for row in rows]
    return render(
        request,
        "erasure_requests.html",
        state=state,
        principal=authorized.principal,
        requests=[(each, views.progress(each)) for each in requests],
        status=wanted or "",
        may_create=allows(state.policy, authorized.principal, "erasure:*", "create"),
        next_href=(
            f"/console/erasure?{urlencode({**query, 'after': next_after})}" if next_after else None
        ),
    )


def _new_page(request: Request, state: StateDep, authorized: Authorized, **context) -> HTMLResponse:
    return render(
        request, "erasure_new.html", state=state, principal=authorized.principal, **context
    )


@router.get("/new", response_class=HTMLResponse, include_in_schema=False)
def new_page(
    request: Request,
    state: StateDep,
    authorized: Annotated[Authorized, console_authorize("erasure:*", "create")],
) -> HTMLResponse:
    return _new_page(request, state, authorized, values={}, errors={})


@router.post("", include_in_schema=False)
def create(
    request: Request,
    form: FormDep,
    session: SessionDep,
    state: StateDep,
    authorized: Annotated[Authorized, console_authorize("erasure:*", "create")],
) -> Response:
    body, errors = checked(ErasureRequestCreate, views.request_body(form))
    if body is None:
        values = {key: form.get(key, "") for key in ("subject", "reference")}
        return _new_page(request, state, authorized, values=values, errors=errors, status_code=422)
    created = service.create(session, state=state, authorized=authorized, body=body)
    return RedirectResponse(f"/console/erasure/{created.id}", status_code=303)


def _detail(request, state, authorized, row, *, values=None, errors=None, status_code=200):
    principal = authorized.principal
    public = ErasureRequestPublic.model_validate(row)
    return render(
        request,
        "erasure_request.html",
        state=state,
        principal=principal,
        status_code=status_code,
        erasure=public,
        progress=views.progress(public),
        may_decide=allows(state.policy, principal, f"erasure:{row.id}", "decide"),
        decisions=views.DECISIONS,
        values=values or {},
        errors=errors or {},
    )


@router.get("/{request_id}", response_class=HTMLResponse, include_in_schema=False)
def detail_page(
    request: Request,
    request_id: RequestId,
    session: SessionDep,
    state: StateDep,
    authorized: Annotated[Authorized, console_authorize("erasure:{request_id}", "read")],
) -> HTMLResponse:
    row = service.get_in_tenant(session, tenant=authorized.principal.tenant, request_id=request_id)
    return _detail(request, state, authorized, row)


@router.get("/{request_id}/progress", response_class=HTMLResponse, include_in_schema=False)
def progress_partial(
    request: Request,
    request_id: RequestId,
    session: SessionDep,
    state: StateDep,
    authorized: Annotated[Authorized, console_authorize("erasure:{request_id}", "read")],
) -> HTMLResponse:
    """The search's figures alone, for htmx to poll while the request is open."""
    row = service.get_in_tenant(session, tenant=authorized.principal.tenant, request_id=request_id)
    public = ErasureRequestPublic.model_validate(row)
    return render(
        request,
        "erasure_progress.html",
        state=state,
        principal=authorized.principal,
        erasure=public,
        progress=views.progress(public),
    )


@router.post("/{request_id}/decide", include_in_schema=False)
def decide(
    request: Request,
    request_id: RequestId,
    form: FormDep,
    session: SessionDep,
    state: StateDep,
    authorized: Annotated[Authorized, console_authorize("erasure:{request_id}", "decide")],
) -> Response:
    body, errors = checked(ErasureDecide, views.decide_body(form))
    if body is None:
        row = service.get_in_tenant(
            session, tenant=authorized.principal.tenant, request_id=request_id
        )
        values = views.decide_values(form)
        return _detail(
            request, state, authorized, row, values=values, errors=errors, status_code=422
        )
    service.decide(session, state=state, authorized=authorized, request_id=request_id, body=body)
    return RedirectResponse(f"/console/erasure/{request_id}", status_code=303)
