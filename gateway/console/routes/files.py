"""Files: a data source's file versions (as GET /v1/files lists them) and a file version's
page, its facts and its datasheet (as GET /v1/files/{id} reads it)."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import HTMLResponse

from gateway.authz import Authorized
from gateway.console import files as views
from gateway.console.deps import console_authorize
from gateway.console.render import render
from gateway.deps import SessionDep, StateDep
from gateway.files import service
from gateway.files.schemas import FilePublic

router = APIRouter(prefix="/console/files")

FileId = Annotated[str, Path(max_length=64)]
Ident = Annotated[str | None, Query(max_length=64, pattern=r"^[A-Za-z0-9._-]*$")]
PAGE = 50


@router.get("", response_class=HTMLResponse, include_in_schema=False)
def list_page(
    request: Request,
    session: SessionDep,
    state: StateDep,
    authorized: Annotated[Authorized, console_authorize("ds:*", "list")],
    data_source: Ident = None,
    after: Ident = None,
) -> HTMLResponse:
    """Newest first; asked for by htmx (the data source's page) it is the table alone."""
    rows, more = service.list_visible(
        session,
        state=state,
        authorized=authorized,
        purpose=None,
        data_source=data_source or None,
        after=after or None,
        limit=PAGE,
        order="desc",
    )
    query = {"data_source": data_source} if data_source else {}
    partial = bool(request.headers.get("hx-request"))
    response = render(
        request,
        "datasheet_files.html" if partial else "datasheet_list.html",
        state=state,
        principal=authorized.principal,
        files=[FilePublic.model_validate(row) for row in rows],
        data_source=data_source or "",
        next_href=(
            f"/console/files?{urlencode({**query, 'after': rows[-1].id})}" if more else None
        ),
    )
    response.headers["Vary"] = "HX-Request"
    return response


@router.get("/{file_id}", response_class=HTMLResponse, include_in_schema=False)
def datasheet_page(
    request: Request,
    file_id: FileId,
    session: SessionDep,
    state: StateDep,
    authorized: Annotated[
        Authorized, console_authorize("ds:{data_source}", "read", resolve=service.data_source_of)
    ],
) -> HTMLResponse:
    return render(
        request,
        "datasheet.html",
        state=state,
        principal=authorized.principal,
        **views.datasheet(session, state=state, authorized=authorized, file_id=file_id),
    )
