"""Data sources: the list and approval queue, the propose form, approve (four eyes), revoke."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from gateway.authz import Authorized, allows
from gateway.console import data_sources as views
from gateway.console.deps import FormDep, console_authorize
from gateway.console.forms import checked
from gateway.console.render import render
from gateway.data_sources import service
from gateway.data_sources.schemas import DataSourceCreate, DataSourcePublic, DataSourceRevoke
from gateway.deps import SessionDep, StateDep

router = APIRouter(prefix="/console/data-sources")
Cursor = Annotated[str | None, Query(max_length=64, pattern=r"^[A-Za-z0-9._-]*$")]
PAGE = 50


@router.get("", response_class=HTMLResponse, include_in_schema=False)
def list_page(
    request: Request,
    session: SessionDep,
    state: StateDep,
    authorized: Annotated[Authorized, console_authorize("ds:*", "list")],
    status: Annotated[str | None, Query(max_length=16)] = None,
    after: Cursor = None,
) -> HTMLResponse:
    wanted = views.status_filter(status)
    sources, next_after = service.list_visible(
        session, state=state, authorized=authorized, status=wanted, after=after, limit=PAGE
    )
    query = {"status": wanted} if wanted else {}
    return render(
        request,
        "data_sources.html",
        state=state,
        principal=authorized.principal,
        sources=[DataSourcePublic.model_validate(source) for source in sources],
        status=wanted or "",
        may_propose=allows(state.policy, authorized.principal, "ds:*", "create"),
        next_href=(
            f"/console/data-sources?{urlencode({**query, 'after': next_after})}"
            if next_after
            else None
        ),
    )


def _new_page(request: Request, state: StateDep, authorized: Authorized, **context) -> HTMLResponse:
    return render(
        request,
        "data_source_new.html",
        state=state,
        principal=authorized.principal,
        classifications=views.CLASSIFICATIONS,
        legal_bases=views.LEGAL_BASES,
        pii_actions=views.PII_ACTIONS,
        **context,
    )


@router.get("/new", response_class=HTMLResponse, include_in_schema=False)
def new_page(
    request: Request,
    state: StateDep,
    authorized: Annotated[Authorized, console_authorize("ds:*", "create")],
) -> HTMLResponse:
    return _new_page(request, state, authorized, values={}, errors={})


@router.post("", include_in_schema=False)
def propose(
    request: Request,
    form: FormDep,
    session: SessionDep,
    state: StateDep,
    authorized: Annotated[Authorized, console_authorize("ds:*", "create")],
) -> Response:
    body, errors = checked(DataSourceCreate, views.proposal(form))
    if body is None:
        values = dict(form) | {
            "contains_personal_data": form.get("contains_personal_data") == "true"
        }
        return _new_page(request, state, authorized, values=values, errors=errors, status_code=422)
    source = service.propose(session, authorized=authorized, body=body)
    return RedirectResponse(f"/console/data-sources/{source.id}", status_code=303)


def _detail(request, state, authorized, source, *, values=None, errors=None, status_code=200):
    principal = authorized.principal
    return render(
        request,
        "data_source.html",
        state=state,
        principal=principal,
        status_code=status_code,
        source=DataSourcePublic.model_validate(source),
        may_approve=allows(state.policy, principal, f"ds:{source.id}", "approve"),
        may_revoke=allows(state.policy, principal, f"ds:{source.id}", "revoke"),
        values=values or {},
        errors=errors or {},
    )


@router.get("/{data_source_id}", response_class=HTMLResponse, include_in_schema=False)
def detail_page(
    request: Request,
    data_source_id: str,
    session: SessionDep,
    state: StateDep,
    authorized: Annotated[Authorized, console_authorize("ds:{data_source_id}", "read")],
) -> HTMLResponse:
    source = service.get_visible(session, authorized=authorized, data_source_id=data_source_id)
    return _detail(request, state, authorized, source)


@router.post("/{data_source_id}/approve", include_in_schema=False)
def approve(
    data_source_id: str,
    _form: FormDep,
    session: SessionDep,
    state: StateDep,
    authorized: Annotated[Authorized, console_authorize("ds:{data_source_id}", "approve")],
) -> Response:
    service.approve(session, state=state, authorized=authorized, data_source_id=data_source_id)
    return RedirectResponse(f"/console/data-sources/{data_source_id}", status_code=303)


@router.post("/{data_source_id}/revoke", include_in_schema=False)
def revoke(
    request: Request,
    data_source_id: str,
    form: FormDep,
    session: SessionDep,
    state: StateDep,
    authorized: Annotated[Authorized, console_authorize("ds:{data_source_id}", "revoke")],
) -> Response:
    body, errors = checked(DataSourceRevoke, {"reason": form.get("reason", "")})
    if body is None:
        source = service.get_visible(session, authorized=authorized, data_source_id=data_source_id)
        values = {"reason": form.get("reason", "")}
        return _detail(
            request, state, authorized, source, values=values, errors=errors, status_code=422
        )
    service.revoke(
        session,
        state=state,
        authorized=authorized,
        data_source_id=data_source_id,
        reason=body.reason,
    )
    return RedirectResponse(f"/console/data-sources/{data_source_id}", status_code=303)
