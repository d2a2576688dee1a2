"""POST /v1/fine_tuning/jobs/dry_run: what a submission would cost, and every gate that
would refuse it, written nowhere but in its own audit event (gateway.jobs.dry_run)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter

from gateway.authz import Authorized
from gateway.deps import SessionDep, StateDep, authorize
from gateway.dry_runs.schemas import JobDryRunPublic
from gateway.jobs import dry_run
from gateway.jobs.schemas import JobCreate

router = APIRouter(prefix="/v1/fine_tuning/jobs", tags=["fine-tuning jobs"])


@router.post("/dry_run", response_model=JobDryRunPublic)
def dry_run_job(
    body: JobCreate,
    session: SessionDep,
    state: StateDep,
    authorized: Annotated[Authorized, authorize("job:*", "create")],
) -> JobDryRunPublic:
    """The body of `POST /v1/fine_tuning/jobs`, checked by every gate that submission
    passes, none stopping the others: the cost estimate and each refusal (`gate`, the
    HTTP `status`, `code`, `message`, `param`, `details`) the submission would get."""
    return JobDryRunPublic.of(
        dry_run.dry_run(session, state=state, authorized=authorized, body=body)
    )
