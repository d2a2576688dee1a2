"""The home page: what is waiting for the signed-in person."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from gateway.console import home
from gateway.console.deps import ConsolePrincipalDep, signed_in
from gateway.console.render import render
from gateway.deps import SessionDep, StateDep

router = APIRouter(prefix="/console")


@router.get("", response_class=HTMLResponse, include_in_schema=False, dependencies=[signed_in()])
def home_page(
    request: Request, session: SessionDep, state: StateDep, principal: ConsolePrincipalDep
) -> HTMLResponse:
    panels = home.waiting_for(session, state=state, principal=principal)
    return render(request, "home.html", state=state, principal=principal, panels=panels)
