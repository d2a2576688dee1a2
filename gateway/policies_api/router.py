from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, status

from gateway.authz import Authorized
from gateway.deps import SessionDep, StateDep, authorize
from gateway.policies_api import service
from gateway.policies_api.schemas import (
    PolicyCheck,
    PolicyCheckResult,
    PolicyVersionPublic,
    PolicyVersionsPage,
    RulePublic,
    RulesChange,
    RulesPage,
)

router = APIRouter(prefix="/v1/policies", tags=["policies"])

ReadPolicy = Annotated[Authorized, authorize("policy", "read")]
EditPolicy = Annotated[Authorized, authorize("policy", "edit")]
FilterValue = Annotated[str | None, Query(max_length=256)]
# Rule and version ids are 32-bit integer columns.
Cursor = Annotated[int | None, Query(ge=0, le=2**31 - 1)]


@router.get("/rules", response_model=RulesPage)
def list_policy_rules(
    session: SessionDep,
    authorized: ReadPolicy,
    tenant: FilterValue = None,
    ptype: Literal["p", "g", "g2"] | None = None,
    sub: FilterValue = None,
    obj: FilterValue = None,
    act: FilterValue = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    after: Cursor = None,
) -> RulesPage:
    page = service.list_rules(
        session,
        authorized=authorized,
        tenant=tenant,
        ptype=ptype,
        sub=sub,
        obj=obj,
        act=act,
        limit=limit,
        after=after,
    )
    return RulesPage(
        data=[
            RulePublic(id=item.id, ptype=item.rule.ptype, values=list(item.rule.values))
            for item in page.items
        ],
        has_more=page.next_after is not None,
        next_after=page.next_after,
    )


@router.post("/rules", response_model=PolicyVersionPublic, status_code=status.HTTP_201_CREATED)
def add_policy_rules(
    body: RulesChange, session: SessionDep, state: StateDep, authorized: EditPolicy
) -> PolicyVersionPublic:
    version = service.change_rules(
        session, state=state, authorized=authorized, add=body.rules, reason=body.reason
    )
    return PolicyVersionPublic(**version.as_dict())


@router.delete("/rules", response_model=PolicyVersionPublic)
def remove_policy_rules(
    body: RulesChange, session: SessionDep, state: StateDep, authorized: EditPolicy
) -> PolicyVersionPublic:
    version = service.change_rules(
        session, state=state, authorized=authorized, remove=body.rules, reason=body.reason
    )
    return PolicyVersionPublic(**version.as_dict())


@router.post("/check", response_model=PolicyCheckResult)
def check_policy(
    body: PolicyCheck,
    session: SessionDep,
    state: StateDep,
    authorized: Annotated[Authorized, authorize("policy", "check")],
) -> PolicyCheckResult:
    decision = service.check(session, state=state, authorized=authorized, request=body)
    return PolicyCheckResult(
        **decision.as_dict(),
        request={**body.model_dump(), "tenant": authorized.principal.tenant},
    )


@router.get("/versions", response_model=PolicyVersionsPage)
def list_policy_versions(
    session: SessionDep,
    authorized: ReadPolicy,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    before: Cursor = None,
    changes: bool = False,
) -> PolicyVersionsPage:
    versions, next_before = service.list_versions(
        session, authorized=authorized, limit=limit, before=before, with_changes=changes
    )
    return PolicyVersionsPage(
        data=[PolicyVersionPublic(**version) for version in versions],
        has_more=next_before is not None,
        next_before=next_before,
    )
