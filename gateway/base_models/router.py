from __future__ import annotations

import functools
from typing import Annotated, Literal

import anyio
from fastapi import APIRouter, Depends, Path, Query, Request, status
from fastapi.concurrency import run_in_threadpool

from gateway.audit_api.service import record_denial
from gateway.authz import Authorized
from gateway.base_models import service
from gateway.base_models.schemas import BaseModelCreate, BaseModelPublic, BaseModelsPage
from gateway.deps import Authorize, PrincipalDep, SessionDep, StateDep, authorize
from policies.enforcer import Decision

router = APIRouter(prefix="/v1/base_models", tags=["base models"])

BaseModelName = Annotated[str, Path(max_length=64)]


class AuthorizeChange(Authorize):
    """`Authorize("base:{name}", act)` for a change to a base model, decided in the domain
    that owns it. A tenant's own base model: the caller's tenant decides (its admin retires
    what it registered). A global one: the platform domain, where only a token issued for
    it (the platform admin's) holds roles; anyone else whom their own tenant's policy allows
    is refused there, recorded as a denial, 403 `platform_admin_required`."""

    def __init__(self, act: str) -> None:
        super().__init__("base:{name}", act)

    def __repr__(self) -> str:
        return f"AuthorizeChange({self.act!r})"

    async def __call__(
        self, request: Request, principal: PrincipalDep, state: StateDep
    ) -> Authorized:
        authorized = await super().__call__(request, principal, state)
        if principal.platform:
            return authorized
        name = str(request.path_params["name"])
        scope = await run_in_threadpool(service.scope_of, state.engine, name)
        if scope is not None:  # the tenant's own, another's or none (the service says 404)
            return authorized
        decision = Decision(False, None, state.policy.policy_version)
        with anyio.CancelScope(shield=True):
            await run_in_threadpool(
                functools.partial(
                    record_denial,
                    state,
                    principal=principal,
                    obj=authorized.obj,
                    act=self.act,
                    decision=decision,
                    route=authorized.route,
                    method=authorized.method,
                )
            )
        raise service.platform_admin_required(
            principal, obj=authorized.obj, act=self.act, version=decision.policy_version
        )


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
    authorized: Annotated[Authorized, Depends(AuthorizeChange("retire"))],
) -> BaseModelPublic:
    return BaseModelPublic.model_validate(service.retire(session, authorized=authorized, name=name))
