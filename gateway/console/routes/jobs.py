"""Jobs (engineers): the list, the submit form with its dry run, and a job's page with its
live events, its loss chart and the cancel, pause and resume buttons."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Header, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sse_starlette.sse import EventSourceResponse

from gateway.authz import Authorized, allows
from gateway.console import jobs as views
from gateway.console.deps import FormDep, console_authorize
from gateway.console.render import render
from gateway.deps import SessionDep, StateDep
from gateway.dry_runs.schemas import JobDryRunPublic
from gateway.errors import GatewayError
from gateway.jobs import dry_run, service
from gateway.jobs import router as jobs_api
from gateway.jobs.schemas import JobPublic

router = APIRouter(prefix="/console/jobs")
Cursor = Annotated[str | None, Query(max_length=64, pattern=r"^[A-Za-z0-9._-]*$")]
JobId = Annotated[str, Path(max_length=64)]
ReadJob = Annotated[Authorized, console_authorize("job:{job_id}", "read")]
StopJob = Annotated[Authorized, console_authorize("job:{job_id}", "cancel")]
CreateJob = Annotated[Authorized, console_authorize("job:*", "create")]


@router.get("", response_class=HTMLResponse, include_in_schema=False)
def list_page(
    request: Request,
    session: SessionDep,
    state: StateDep,
    authorized: Annotated[Authorized, console_authorize("job:*", "list")],
    mine: Annotated[str | None, Query(max_length=4)] = None,
    after: Cursor = None,
) -> HTMLResponse:
    principal = authorized.principal
    rows, more = service.list_visible(
        session,
        state=state,
        authorized=authorized,
        after=after or None,
        limit=views.PAGE,
        metadata={},
    )
    only_mine = mine == "1"
    shown = [row for row in rows if not only_mine or row.created_by == principal.sub]
    query = {"mine": "1"} if only_mine else {}
    return render(
        request,
        "jobs.html",
        state=state,
        principal=principal,
        jobs=[JobPublic.of(row) for row in shown],
        when=views.when,
        mine=only_mine,
        may_create=allows(state.policy, principal, "job:*", "create"),
        next_href=f"/console/jobs?{urlencode({**query, 'after': rows[-1].id})}" if more else None,
    )


def _form_page(request, session, state, authorized, *, status_code=200, **context):
    principal = authorized.principal
    return render(
        request,
        "job_new.html",
        state=state,
        principal=principal,
        status_code=status_code,
        choices=views.choices(session, state=state, principal=principal),
        **{"values": views.DEFAULTS, "errors": {}, "check": None, "refused": None, **context},
    )


@router.get("/new", response_class=HTMLResponse, include_in_schema=False)
def new_page(
    request: Request, session: SessionDep, state: StateDep, authorized: CreateJob
) -> HTMLResponse:
    return _form_page(request, session, state, authorized)


@router.post("/dry-run", response_class=HTMLResponse, include_in_schema=False)
def check(
    request: Request, form: FormDep, session: SessionDep, state: StateDep, authorized: CreateJob
) -> HTMLResponse:
    """The API's dry run of what the form asks for: the estimate and every failing gate."""
    values = views.form_values(form)
    body, errors = views.checked_job(form)
    if body is None:
        return _form_page(
            request, session, state, authorized, values=values, errors=errors, status_code=422
        )
    result = dry_run.dry_run(session, state=state, authorized=authorized, body=body)
    return _form_page(
        request, session, state, authorized, values=values, check=JobDryRunPublic.of(result)
    )


@router.post("", include_in_schema=False)
def submit(
    request: Request, form: FormDep, session: SessionDep, state: StateDep, authorized: CreateJob
) -> Response:
    values = views.form_values(form)
    body, errors = views.checked_job(form)
    if body is None:
        return _form_page(
            request, session, state, authorized, values=values, errors=errors, status_code=422
        )
    try:
        job = service.create(session, state=state, authorized=authorized, body=body)
    except GatewayError as exc:  # a gate refused (and was audited): the form, with why
        field = exc.param if exc.param in views.PLAIN else None
        return _form_page(
            request,
            session,
            state,
            authorized,
            values=values,
            errors={field: exc.message} if field else {},
            refused=exc,
            status_code=exc.status_code,
        )
    return RedirectResponse(f"/console/jobs/{job.id}", status_code=303)


def _live(session, state, authorized: Authorized, job_id: str) -> dict:
    job = service.get_in_tenant(session, tenant=authorized.principal.tenant, job_id=job_id)
    events = views.all_events(session, authorized=authorized, job_id=job_id)
    return {
        "job": JobPublic.of(job),
        "facts": views.facts(job),
        "actions": views.actions(state, authorized.principal, job),
        "chart": views.loss_chart(events),
    }


@router.get("/{job_id}", response_class=HTMLResponse, include_in_schema=False)
def job_page(
    request: Request, job_id: JobId, session: SessionDep, state: StateDep, authorized: ReadJob
) -> HTMLResponse:
    return render(
        request,
        "job.html",
        state=state,
        principal=authorized.principal,
        **_live(session, state, authorized, job_id),
    )


@router.get("/{job_id}/live", response_class=HTMLResponse, include_in_schema=False)
def live_part(
    request: Request, job_id: JobId, session: SessionDep, state: StateDep, authorized: ReadJob
) -> HTMLResponse:
    """The status, buttons and loss chart, re-fetched every 2 s while the job runs."""
    return render(
        request,
        "job_live.html",
        state=state,
        principal=authorized.principal,
        **_live(session, state, authorized, job_id),
    )


@router.get("/{job_id}/events/stream", include_in_schema=False)
def events_stream(
    job_id: JobId,
    state: StateDep,
    authorized: ReadJob,
    last_event_id: Annotated[str | None, Header(max_length=32)] = None,
) -> EventSourceResponse:
    """The API's event stream, for the page's own script (no write transaction here)."""
    after_seq = service.event_seq(last_event_id) if last_event_id else 0
    service.require_job_readonly(state, tenant=authorized.principal.tenant, job_id=job_id)
    return EventSourceResponse(jobs_api.event_stream(state, job_id, after_seq, end_event=True))


@router.post("/{job_id}/cancel", include_in_schema=False)
def cancel(
    job_id: JobId, _form: FormDep, session: SessionDep, state: StateDep, authorized: StopJob
) -> Response:
    service.cancel(session, state=state, authorized=authorized, job_id=job_id)
    return RedirectResponse(f"/console/jobs/{job_id}", status_code=303)


@router.post("/{job_id}/pause", include_in_schema=False)
def pause(
    job_id: JobId, _form: FormDep, session: SessionDep, state: StateDep, authorized: StopJob
) -> Response:
    service.pause(session, state=state, authorized=authorized, job_id=job_id)
    return RedirectResponse(f"/console/jobs/{job_id}", status_code=303)


@router.post("/{job_id}/resume", include_in_schema=False)
def resume(
    job_id: JobId, _form: FormDep, session: SessionDep, state: StateDep, authorized: StopJob
) -> Response:
    service.resume(session, state=state, authorized=authorized, job_id=job_id)
    return RedirectResponse(f"/console/jobs/{job_id}", status_code=303)
