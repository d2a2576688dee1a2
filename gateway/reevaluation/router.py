from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from gateway.authz import Authorized
from gateway.deps import SessionDep, StateDep, authorize
from gateway.reevaluation import service
from gateway.reevaluation.schemas import ReevaluationPublic, ReevaluationsPage

router = APIRouter(prefix="/v1/models", tags=["models"])

ModelId = Annotated[str, Path(max_length=128)]


@router.post("/{model_id}/reevaluations", response_model=ReevaluationPublic, status_code=202)
def request_reevaluation(
    model_id: ModelId,
    session: SessionDep,
    state: StateDep,
    authorized: Annotated[Authorized, authorize("model:{model_id}", "evaluate")],
) -> ReevaluationPublic:
    """Runs the version's held-out evaluation set and OOD probe again on its registered
    adapter (queued; `GET` the list to follow it), and flags the version `degraded` when
    its figures fell since promotion."""
    runner = state.reevaluations
    return ReevaluationPublic.model_validate(
        service.request(
            session,
            authorized=authorized,
            model_id=model_id,
            wake=runner.wake if runner is not None else None,
        )
    )


@router.get("/{model_id}/reevaluations", response_model=ReevaluationsPage)
def list_reevaluations(
    model_id: ModelId,
    session: SessionDep,
    authorized: Annotated[Authorized, authorize("model:{model_id}", "read")],
    after: Annotated[str | None, Query(max_length=40, pattern=r"^[A-Za-z0-9-]*$")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> ReevaluationsPage:
    """The version's re-evaluations, newest first."""
    rows, more = service.list_for_model(
        session, authorized=authorized, model_id=model_id, after=after, limit=limit
    )
    return ReevaluationsPage(
        data=[ReevaluationPublic.model_validate(row) for row in rows],
        has_more=more,
        next_after=rows[-1].id if more and rows else None,
    )
