from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, status

from gateway.authz import Authorized
from gateway.data_sources import service
from gateway.data_sources.schemas import (
    DataSourceCreate,
    DataSourcePublic,
    DataSourceRevoke,
    DataSourcesPage,
)
from gateway.deps import SessionDep, StateDep, authorize

router = APIRouter(prefix="/v1/data_sources", tags=["data sources"])

DataSourceId = Annotated[str, Path(max_length=64)]


@router.post("", response_model=DataSourcePublic, status_code=status.HTTP_201_CREATED)
def propose_data_source(
    body: DataSourceCreate,
    session: SessionDep,
    authorized: Annotated[Authorized, authorize("ds:*", "create")],
) -> DataSourcePublic:
    return DataSourcePublic.model_validate(
        service.propose(session, authorized=authorized, body=body)
    )


@router.get("", response_model=DataSourcesPage)
def list_data_sources(
    session: SessionDep,
    state: StateDep,
    authorized: Annotated[Authorized, authorize("ds:*", "list")],
    status: Literal["proposed", "approved", "revoked"] | None = None,
    after: Annotated[str | None, Query(max_length=64, pattern=r"^[A-Za-z0-9._-]*$")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> DataSourcesPage:
    sources, next_after = service.list_visible(
        session, state=state, authorized=authorized, status=status, after=after, limit=limit
    )
    return DataSourcesPage(
        data=[DataSourcePublic.model_validate(source) for source in sources],
        has_more=next_after is not None,
        next_after=next_after,
    )


@router.get("/{data_source_id}", response_model=DataSourcePublic)
def get_data_source(
    data_source_id: DataSourceId,
    session: SessionDep,
    authorized: Annotated[Authorized, authorize("ds:{data_source_id}", "read")],
) -> DataSourcePublic:
    return DataSourcePublic.model_validate(
        service.get_visible(session, authorized=authorized, data_source_id=data_source_id)
    )


@router.post("/{data_source_id}/approve", response_model=DataSourcePublic)
def approve_data_source(
    data_source_id: DataSourceId,
    session: SessionDep,
    state: StateDep,
    authorized: Annotated[Authorized, authorize("ds:{data_source_id}", "approve")],
) -> DataSourcePublic:
    return DataSourcePublic.model_validate(
        service.approve(session, state=state, authorized=authorized, data_source_id=data_source_id)
    )


@router.post("/{data_source_id}/revoke", response_model=DataSourcePublic)
def revoke_data_source(
    data_source_id: DataSourceId,
    body: DataSourceRevoke,
    session: SessionDep,
    state: StateDep,
    authorized: Annotated[Authorized, authorize("ds:{data_source_id}", "revoke")],
) -> DataSourcePublic:
    return DataSourcePublic.model_validate(
        service.revoke(
            session,
            state=state,
            authorized=authorized,
            data_source_id=data_source_id,
            reason=body.reason,
        )
    )
