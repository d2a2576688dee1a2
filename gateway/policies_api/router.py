from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, status

from gateway.authz import Authorized
from gateway.deps import SessionDep, StateDep, authorize
from gateway.policies_api import service
from gateway.policies_api.schemas import (
    AccessChangePublic,
    ChainLink,
    MatchedRule,
    PolicyApplyCreate,
    PolicyCheck,
    PolicyCheckResult,
    PolicyExplainCreate,
    PolicyExplanation,
    PolicyExport,
    PolicyPlanCreate,
    PolicyPlanPublic,
    PolicyVersionDiff,
    PolicyVersionPublic,
    PolicyVersionRef,
    PolicyVersionsPage,
    RulePublic,
    RulesChange,
    RulesPage,
)
from policies.enforcer import Explanation, Link
from policies.plan import AccessChange
from policies.store import VersionRecord

router = APIRouter(prefix="/v1/policies", tags=["policies"])

ReadPolicy = Annotated[Authorized, authorize("policy", "read")]
EditPolicy = Annotated[Authorized, authorize("policy", "edit")]
CheckPolicy = Annotated[Authorized, authorize("policy", "check")]
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
    authorized: CheckPolicy,
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


# --- policy as code ------------------------------------------------------------------------


def _ref(version: VersionRecord | None) -> PolicyVersionRef | None:
    return None if version is None else PolicyVersionRef(id=version.id, hash=version.hash)


@router.get("/export", response_model=PolicyExport)
def export_policy(session: SessionDep, state: StateDep, authorized: ReadPolicy) -> PolicyExport:
    result = service.export_policy(session, state=state, authorized=authorized)
    return PolicyExport(tenant=result.tenant, version=_ref(result.version), rules=result.rules)


def _access_change(change: AccessChange) -> AccessChangePublic:
    before, after = change.before, change.after
    return AccessChangePublic(
        sub=change.sub,
        obj=change.obj,
        act=change.act,
        before="allow" if before.allowed else "deny",
        after="allow" if after.allowed else "deny",
        rule_before=list(before.rule) if before.rule else None,
        rule_after=list(after.rule) if after.rule else None,
        alike=change.alike,
    )


@router.post("/plan", response_model=PolicyPlanPublic)
def plan_policy(
    body: PolicyPlanCreate, session: SessionDep, state: StateDep, authorized: CheckPolicy
) -> PolicyPlanPublic:
    result = service.plan_change(session, state=state, authorized=authorized, body=body)
    return PolicyPlanPublic(
        tenant=result.tenant,
        base_version=_ref(result.base),
        new_policy_version=result.new_policy_version,
        added=[rule.line for rule in result.change.added],
        removed=[rule.line for rule in result.change.removed],
        access_changes=[_access_change(change) for change in result.access.changes],
        checked=result.access.checked,
        complete=result.access.complete,
    )


@router.post("/apply", response_model=PolicyVersionPublic, status_code=status.HTTP_201_CREATED)
def apply_policy(
    body: PolicyApplyCreate, session: SessionDep, state: StateDep, authorized: EditPolicy
) -> PolicyVersionPublic:
    version = service.apply_change(session, state=state, authorized=authorized, body=body)
    return PolicyVersionPublic(**version.as_dict())


def _links(links: tuple[Link, ...]) -> list[ChainLink]:
    return [ChainLink(source=link.source, target=link.target, via=link.via) for link in links]


def _explanation(explanation: Explanation, request: dict) -> PolicyExplanation:
    decision = explanation.decision
    deciding = explanation.deciding
    return PolicyExplanation(
        **decision.as_dict(),
        deny_override=explanation.deny_override,
        role_chain=_links(deciding.role_chain) if deciding else [],
        matched=[
            MatchedRule(
                rule=list(match.rule),
                effect=match.effect,
                deciding=match.deciding,
                object_match=match.object_match,
                role_chain=_links(match.role_chain),
                object_chain=_links(match.object_chain),
            )
            for match in explanation.matched
        ],
        request=request,
    )


@router.post("/explain", response_model=PolicyExplanation)
def explain_policy(
    body: PolicyExplainCreate, session: SessionDep, state: StateDep, authorized: CheckPolicy
) -> PolicyExplanation:
    tenant, explanation = service.explain(session, state=state, authorized=authorized, request=body)
    return _explanation(explanation, {**body.model_dump(), "tenant": tenant})


@router.get("/diff", response_model=PolicyVersionDiff)
def diff_policy_versions(
    session: SessionDep,
    authorized: ReadPolicy,
    from_version: Annotated[int, Query(alias="from", ge=0, le=2**31 - 1)],
    to_version: Annotated[int, Query(alias="to", ge=0, le=2**31 - 1)],
) -> PolicyVersionDiff:
    added, removed = service.diff_versions(
        session, authorized=authorized, from_id=from_version, to_id=to_version
    )
    return PolicyVersionDiff(
        from_version=from_version,
        to_version=to_version,
        added=[rule.line for rule in added],
        removed=[rule.line for rule in removed],
    )
