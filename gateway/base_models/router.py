from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, status

from gateway.authz import Authorized
from gateway.base_models import service
from gateway.base_models.schemas import BaseModelCreate, BaseModelPublic, BaseModelsPage
from gateway.deps import SessionDep, StateDep, authorize

router = APIRouter(prefix="/v1/base_models", tags=["base models"])

BaseModelName = Annotated[str, Path(max_length=64)]


@router.post("", response_model=BaseModelPublic, status_code=status.HTTP_201_CREATED)
def register_base_model(
    body: BaseModelCreate,
    session: SessionDep,
    state: StateDep,
    authorized: Annotated[Authorized, authorize("base:*", "create")],
) -> BaseModelPublic:
    return BaseModelPublic.model_validate(
        service.register(session, state=state, authorized=authorized, body=body)
    )


@router.get("", response_model=BaseModelsPage)
def list_base_models(
    session: SessionDep,
    state: StateDep,
    authorized: Annotated[Authorized, authorize("base:*", "list")],
    status: Literal["active", "retired"] | None = None,
    after: Annotated[str | None, Query(max_length=64, pattern=r"^[A-Za-z0-9._-]*$")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> BaseModelsPage:
    rows, next_after = service.list_visible(
        session, state=state, authorized=authorized, status=status, after=after, limit=limit
    )
    return BaseModelsPage(
        data=[BaseModelPublic.model_validate(row) for row in rows],
        has_more=next_after is not None,
        next_after=next_after,
    )


@router.get("/{name}", response_model=BaseModelPublic)
def get_base_model(
    name: BaseModelName,
    session: SessionDep,
    authorized: Annotated[Authorized, authorize("base:{name}", "read")],
) -> BaseModelPublic:
    return BaseModelPublic.model_validate(
        service.get_visible(session, authorized=authorized, name=name)
    )


@router.post("/{name}/retire", response_model=BaseModelPublic)
def retire_base_model(
    name: BaseModelName,
    session: SessionDep,
    authorized: Annotated[Authorized, authorize("base:{name}", "retire")],
) -> BaseModelPublic:
    return BaseModelPublic.model_validate(service.retire(session, authorized=authorized, name=name))
