from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, status

from gateway.authz import Authorized
from gateway.deps import SessionDep, StateDep, authorize
from gateway.erasure import service
from gateway.erasure.schemas import (
    ErasureDecide,
    ErasureRequestCreate,
    ErasureRequestPublic,
    ErasureRequestsPage,
)

router = APIRouter(prefix="/v1/erasure_requests", tags=["erasure"])

RequestId = Annotated[str, Path(max_length=64)]


@router.post("", response_model=ErasureRequestPublic, status_code=status.HTTP_201_CREATED)
def create_erasure_request(
    body: ErasureRequestCreate,
    session: SessionDep,
    state: StateDep,
    authorized: Annotated[Authorized, authorize("erasure:*", "create")],
) -> ErasureRequestPublic:
    return ErasureRequestPublic.model_validate(
        service.create(session, state=state, authorized=authorized, body=body)
    )


@router.get("", response_model=ErasureRequestsPage)
def list_erasure_requests(
    session: SessionDep,
    authorized: Annotated[Authorized, authorize("erasure:*", "list")],
    status: Literal["searching", "open", "decided"] | None = None,
    after: Annotated[str | None, Query(max_length=64, pattern=r"^[A-Za-z0-9._-]+$")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> ErasureRequestsPage:
    rows, next_after = service.list_in_tenant(
        session, authorized=authorized, status=status, after=after, limit=limit
    )
    return ErasureRequestsPage(
        data=[ErasureRequestPublic.model_validate(row) for row in rows],
        has_more=next_after is not None,
        next_after=next_after,
    )


@router.get("/{request_id}", response_model=ErasureRequestPublic)
def get_erasure_request(
    request_id: RequestId,
    session: SessionDep,
    authorized: Annotated[Authorized, authorize("erasure:{request_id}", "read")],
) -> ErasureRequestPublic:
    return ErasureRequestPublic.model_validate(
        service.get_in_tenant(session, tenant=authorized.principal.tenant, request_id=request_id)
    )


@router.post("/{request_id}/decide", response_model=ErasureRequestPublic)
def decide_erasure_request(
    request_id: RequestId,
    body: ErasureDecide,
    session: SessionDep,
    state: StateDep,
    authorized: Annotated[Authorized, authorize("erasure:{request_id}", "decide")],
) -> ErasureRequestPublic:
    return ErasureRequestPublic.model_validate(
        service.decide(
            session, state=state, authorized=authorized, request_id=request_id, body=body
        )
    )
