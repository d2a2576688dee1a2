from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Header, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from sse_starlette.sse import EventSourceResponse

from gateway.authz import Authorized
from gateway.deps import SessionDep, StateDep, authorize
from gateway.errors import InvalidRequest
from gateway.jobs import mislabels, service
from gateway.jobs.models import FINAL_STATUSES
from gateway.jobs.schemas import (
    JobCheckpointPublic,
    JobCheckpointsPage,
    JobCreate,
    JobEventPublic,
    JobEventsPage,
    JobPublic,
    JobsPage,
    MislabelReview,
    SuspectedMislabelPublic,
    SuspectedMislabelsPage,
)

router = APIRouter(prefix="/v1/fine_tuning/jobs", tags=["fine-tuning jobs"])

JobId = Annotated[str, Path(max_length=64)]
Cursor = Annotated[str | None, Query(max_length=64, pattern=r"^[A-Za-z0-9._-]+$")]
STREAM_POLL_SECONDS = 0.5
MAX_METADATA_FILTERS = 16


@router.post("", response_model=JobPublic)
def create_job(
    body: JobCreate,
    session: SessionDep,
    state: StateDep,
    authorized: Annotated[Authorized, authorize("job:*", "create")],
) -> JobPublic:
    job = service.create(session, state=state, authorized=authorized, body=body)
    return JobPublic.of(job)


@router.get("", response_model=JobsPage)
def list_jobs(
    request: Request,
    session: SessionDep,
    state: StateDep,
    authorized: Annotated[Authorized, authorize("job:*", "list")],
    after: Cursor = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> JobsPage:
    jobs, has_more = service.list_visible(
        session,
        state=state,
        authorized=authorized,
        after=after,
        limit=limit,
        metadata=_metadata_filters(request),
    )
    return JobsPage(data=[JobPublic.of(job) for job in jobs], has_more=has_more)


def _metadata_filters(request: Request) -> dict[str, str]:
    """OpenAI's `metadata[key]=value` query parameters."""
    filters = {
        key[len("metadata[") : -1]: value
        for key, value in request.query_params.multi_items()
        if key.startswith("metadata[") and key.endswith("]")
    }
    if len(filters) > MAX_METADATA_FILTERS or any(
        not key or len(key) > 64 or len(value) > 512 for key, value in filters.items()
    ):
        raise InvalidRequest("bad metadata filter", code="invalid_filter", param="metadata")
    return filters


@router.get("/{job_id}", response_model=JobPublic)
def get_job(
    job_id: JobId,
    session: SessionDep,
    authorized: Annotated[Authorized, authorize("job:{job_id}", "read")],
) -> JobPublic:
    return JobPublic.of(
        service.get_in_tenant(session, tenant=authorized.principal.tenant, job_id=job_id)
    )


@router.post("/{job_id}/cancel", response_model=JobPublic)
def cancel_job(
    job_id: JobId,
    session: SessionDep,
    state: StateDep,
    authorized: Annotated[Authorized, authorize("job:{job_id}", "cancel")],
) -> JobPublic:
    return JobPublic.of(service.cancel(session, state=state, authorized=authorized, job_id=job_id))


@router.post("/{job_id}/pause", response_model=JobPublic)
def pause_job(
    job_id: JobId,
    session: SessionDep,
    state: StateDep,
    authorized: Annotated[Authorized, authorize("job:{job_id}", "cancel")],
) -> JobPublic:
    """OpenAI's pause: the run checkpoints at its next step and frees its worker; the job
    is `pausing`, then `paused`. The requester or an admin of the tenant, whom the policy
    lets stop the job (`cancel`); 409 `job_not_running` otherwise."""
    return JobPublic.of(service.pause(session, state=state, authorized=authorized, job_id=job_id))


@router.post("/{job_id}/resume", response_model=JobPublic)
def resume_job(
    job_id: JobId,
    session: SessionDep,
    state: StateDep,
    authorized: Annotated[Authorized, authorize("job:{job_id}", "cancel")],
) -> JobPublic:
    """OpenAI's resume: a paused job is queued again and continues from its checkpoint;
    409 `job_not_paused` for any other."""
    return JobPublic.of(service.resume(session, state=state, authorized=authorized, job_id=job_id))


@router.get("/{job_id}/events", response_model=JobEventsPage)
def list_job_events(
    job_id: JobId,
    session: SessionDep,
    authorized: Annotated[Authorized, authorize("job:{job_id}", "read")],
    after: Cursor = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> JobEventsPage:
    events, has_more = service.list_events(
        session, authorized=authorized, job_id=job_id, after=after, limit=limit
    )
    return JobEventsPage(data=[JobEventPublic.of(e) for e in events], has_more=has_more)


@router.get("/{job_id}/events/stream", response_class=EventSourceResponse)
def stream_job_events(
    job_id: JobId,
    state: StateDep,
    authorized: Annotated[Authorized, authorize("job:{job_id}", "read")],
    last_event_id: Annotated[str | None, Header(max_length=32)] = None,
) -> EventSourceResponse:
    """Server-sent events, oldest first, ending when the job has ended; a reconnecting
    client sends Last-Event-ID and resumes after it. Streams are not counted against the
    concurrent-request limit, so nothing here may take a write transaction."""
    after_seq = service.event_seq(last_event_id) if last_event_id else 0
    service.require_job_readonly(state, tenant=authorized.principal.tenant, job_id=job_id)
    return EventSourceResponse(event_stream(state, job_id, after_seq))


async def event_stream(
    state, job_id: str, after_seq: int, *, end_event: bool = False
) -> AsyncIterator[dict]:
    """The job's events after `after_seq` as server-sent events, until the job is final;
    `end_event` adds a last `end` with its status (the console's EventSource would otherwise
    reconnect for ever)."""
    while True:
        events, status = await run_in_threadpool(
            service.events_since, state, job_id=job_id, after_seq=after_seq
        )
        for event in events:
            after_seq = event.seq or after_seq
            public = JobEventPublic.of(event)
            yield {"id": public.id, "event": public.object, "data": json.dumps(public.model_dump())}
        if not events and status in FINAL_STATUSES:
            if end_event:
                yield {"event": "end", "data": json.dumps({"status": status})}
            return
        if not events:
            await asyncio.sleep(STREAM_POLL_SECONDS)


@router.get("/{job_id}/checkpoints", response_model=JobCheckpointsPage)
def list_job_checkpoints(
    job_id: JobId,
    session: SessionDep,
    authorized: Annotated[Authorized, authorize("job:{job_id}", "read")],
    after: Cursor = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 10,
) -> JobCheckpointsPage:
    job, rows, has_more = service.list_checkpoints(
        session, authorized=authorized, job_id=job_id, after=after, limit=limit
    )
    data = [JobCheckpointPublic.of(row, job=job) for row in rows]
    return JobCheckpointsPage(
        data=data,
        has_more=has_more,
        first_id=data[0].id if data else None,
        last_id=data[-1].id if data else None,
    )


# --- suspected mislabels (gateway.jobs.mislabels) ---------------------------------------------


@router.get("/{job_id}/suspected_mislabels", response_model=SuspectedMislabelsPage)
def list_suspected_mislabels(
    job_id: JobId,
    session: SessionDep,
    authorized: Annotated[Authorized, authorize("job:{job_id}", "read")],
    after: Cursor = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> SuspectedMislabelsPage:
    """Training lines the tuned model disagrees with, in line order (keyset paging)."""
    job = service.get_in_tenant(session, tenant=authorized.principal.tenant, job_id=job_id)
    rows, has_more = mislabels.list_page(session, job=job, after=after, limit=limit)
    data = [SuspectedMislabelPublic.of(row) for row in rows]
    return SuspectedMislabelsPage(
        data=data,
        has_more=has_more,
        first_id=data[0].id if data else None,
        last_id=data[-1].id if data else None,
    )


@router.post(
    "/{job_id}/suspected_mislabels/{line_id}/review", response_model=SuspectedMislabelPublic
)
def review_suspected_mislabel(
    job_id: JobId,
    line_id: Annotated[str, Path(max_length=40)],
    body: MislabelReview,
    session: SessionDep,
    authorized: Annotated[
        Authorized,
        authorize("ds:{data_source}", "review", resolve=mislabels.data_source_of),
    ],
) -> SuspectedMislabelPublic:
    """A data owner of the line's data source (``review`` on it) marks the line
    reviewed-correct or confirmed-wrong; audited."""
    row = mislabels.review(
        session,
        authorized=authorized,
        job_id=job_id,
        line_id=line_id,
        verdict=body.verdict,
        reason=body.reason,
    )
    return SuspectedMislabelPublic.of(row)
