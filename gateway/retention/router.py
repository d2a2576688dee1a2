"""Legal holds on a data source (they suspend retention deletion), and the files whose
content retention will soon delete, for their owner."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from gateway.authz import Authorized
from gateway.data_sources.schemas import DataSourcePublic
from gateway.deps import SessionDep, authorize
from gateway.retention import service
from gateway.retention.schemas import LegalHoldChange, RetentionWarningPublic, RetentionWarningsPage

router = APIRouter(tags=["data sources"])

DataSourceId = Annotated[str, Path(max_length=64)]


@router.post("/v1/data_sources/{data_source_id}/legal_hold", response_model=DataSourcePublic)
def set_legal_hold(
    data_source_id: DataSourceId,
    body: LegalHoldChange,
    session: SessionDep,
    authorized: Annotated[Authorized, authorize("ds:{data_source_id}", "hold")],
) -> DataSourcePublic:
    return DataSourcePublic.model_validate(
        service.set_legal_hold(
            session, authorized=authorized, data_source_id=data_source_id, reason=body.reason
        )
    )


@router.delete("/v1/data_sources/{data_source_id}/legal_hold", response_model=DataSourcePublic)
def release_legal_hold(
    data_source_id: DataSourceId,
    body: LegalHoldChange,
    session: SessionDep,
    authorized: Annotated[Authorized, authorize("ds:{data_source_id}", "hold")],
) -> DataSourcePublic:
    return DataSourcePublic.model_validate(
        service.release_legal_hold(
            session, authorized=authorized, data_source_id=data_source_id, reason=body.reason
        )
    )


@router.get("/v1/retention/warnings", response_model=RetentionWarningsPage)
def list_retention_warnings(
    session: SessionDep,
    authorized: Annotated[Authorized, authorize("ds:*", "list")],
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> RetentionWarningsPage:
    """The caller's own: files of the sources they own, due for deletion soon."""
    principal = authorized.principal
    due, more = service.warnings_for(
        session, tenant=principal.tenant, owner=principal.sub, limit=limit
    )
    return RetentionWarningsPage(
        data=[RetentionWarningPublic.model_validate(item) for item in due], has_more=more
    )
