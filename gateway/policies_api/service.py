"""Admin policy changes and dry runs. Never commits: the policy change, its new version
and its audit event land in the request's one transaction."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlmodel import Session

from gateway.audit_api.service import record_allowed
from gateway.authz import Authorized
from gateway.db import after_commit
from gateway.errors import Conflict, GatewayError, InvalidRequest, ServiceUnavailable
from gateway.policies_api.schemas import (
    PolicyApplyCreate,
    PolicyCheck,
    PolicyExplainCreate,
    PolicyPlanCreate,
    RuleIn,
)
from gateway.runtime import Runtime
from policies import plan, store
from policies.enforcer import Decision, Explanation, PolicyEngine
from policies.vocabulary import DENY, GLOBAL_TENANT, PolicyError, Rule, parse_rule

# Where each ptype names its tenant: a tenant admin governs that tenant only. Baseline
# rules for every tenant (`*`) come from the seed, and g2 classification links from data
# source approval, never from this API.
TENANT_FIELD = {"p": 1, "g": 2}
AUDITED_RULES = 10


def policy_error(exc: PolicyError) -> GatewayError:
    error = GatewayError(exc.message, code=exc.reason, param=exc.field)
    error.status_code = exc.http_status
    return error


def _parse_in_tenant(rules: Sequence[RuleIn], tenant: str) -> list[Rule]:
    parsed = []
    for index, rule_in in enumerate(rules):
        try:
            rule = parse_rule([rule_in.ptype, *rule_in.values])
        except PolicyError as exc:
            raise InvalidRequest(
                f"rules[{index}]: {exc.message}", code=exc.reason, param=f"rules.{index}"
            ) from None
        if rule.values[TENANT_FIELD[rule.ptype]] != tenant:
            raise InvalidRequest(
                f"rules[{index}]: a rule here must name your tenant {tenant!r}",
                code="rule_outside_tenant",
                param=f"rules.{index}",
            )
        parsed.append(rule)
    return parsed


def _refuse_admin_lockout(rules: Sequence[Rule]) -> None:
    # The store keeps a tenant from losing its last admin membership; a deny on the
    # policy itself for the admin role would lock every admin out just as surely.
    for rule in rules:
        if (
            rule.ptype == "p"
            and rule.values[0] == store.ADMIN_ROLE
            and rule.values[2] == "policy"
            and rule.values[4] == DENY
        ):
            raise Conflict(
                "a deny on the policy for role:admin would lock every admin out",
                code="last_admin",
                param="rules",
            )


def change_rules(
    session: Session,
    *,
    state: Runtime,
    authorized: Authorized,
    add: Sequence[RuleIn] = (),
    remove: Sequence[RuleIn] = (),
    reason: str | None = None,
) -> store.PolicyVersionInfo:
    tenant = authorized.principal.tenant
    added = _parse_in_tenant(add, tenant)
    removed = _parse_in_tenant(remove, tenant)
    _refuse_admin_lockout(added)
    try:
        version = store.change_rules(
            session, actor=authorized.principal.subject, add=added, remove=removed, reason=reason
        )
    except PolicyError as exc:
        raise policy_error(exc) from None
    record_allowed(
        session,
        authorized=authorized,
        action="policy.rules_added" if added else "policy.rules_removed",
        details=_change_details(version),
    )
    after_commit(session, state.refresh_policy)
    return version


def _change_details(version: store.PolicyVersionInfo) -> dict[str, Any]:
    return {
        "version_id": version.id,
        "new_policy_version": version.hash,
        "parent_policy_version": version.parent_hash,
        # The full diff is the version's `changes`; the event names the first few.
        "added": [rule.line for rule in version.added][:AUDITED_RULES],
        "removed": [rule.line for rule in version.removed][:AUDITED_RULES],
        "added_count": len(version.added),
        "removed_count": len(version.removed),
        "rule_count": version.rule_count,
    }


def list_rules(
    session: Session,
    *,
    authorized: Authorized,
    tenant: str | None,
    ptype: str | None,
    sub: str | None,
    obj: str | None,
    act: str | None,
    limit: int,
    after: int | None,
) -> store.RulePage:
    own = authorized.principal.tenant
    if tenant not in (None, own, GLOBAL_TENANT):
        raise InvalidRequest(
            f"tenant must be {own!r} or {GLOBAL_TENANT!r}",
            code="tenant_not_visible",
            param="tenant",
        )
    try:
        return store.list_rules(
            session,
            ptype=ptype,
            tenant=tenant or own,
            sub=sub,
            obj=obj,
            act=act,
            limit=limit,
            after=after,
        )
    except PolicyError as exc:
        raise policy_error(exc) from None


def list_versions(
    session: Session,
    *,
    authorized: Authorized,
    limit: int,
    before: int | None,
    with_changes: bool,
) -> tuple[list[dict], int | None]:
    """Versions are global (one rule set), but what they changed is shown only for the
    caller's tenant and the baseline: another tenant's rules, actor and reason stay
    hidden; its versions appear as id, hash and time, so the chain stays complete."""
    try:
        page = store.list_versions(session, limit=limit, before=before, with_changes=True)
    except PolicyError as exc:
        raise policy_error(exc) from None
    tenant = authorized.principal.tenant
    return [_version_seen_from(v, tenant, with_changes) for v in page.items], page.next_before


def _rule_visible_in(rule: Rule, tenant: str) -> bool:
    field = TENANT_FIELD.get(rule.ptype)
    return field is not None and rule.values[field] in (tenant, GLOBAL_TENANT)


def _version_seen_from(version: store.PolicyVersionInfo, tenant: str, with_changes: bool) -> dict:
    added = [r for r in version.added if _rule_visible_in(r, tenant)]
    removed = [r for r in version.removed if _rule_visible_in(r, tenant)]
    touches_tenant = bool(added or removed)
    seen = version.as_dict(changes=False)
    if not touches_tenant:
        seen["actor"] = None
        seen["reason"] = None
    if with_changes:
        seen["changes"] = {
            "added": [r.as_list() for r in added],
            "removed": [r.as_list() for r in removed],
        }
    return seen


def _decision_details(request: Any, decision: Decision) -> dict[str, Any]:
    """What a dry-run decision's audit event says. Only values the vocabulary accepted reach
    the trail; an invalid request is recorded by its error code."""
    asked = (
        {"sub": request.sub, "obj": request.obj, "act": request.act}
        if decision.error is None
        else {"error": decision.error}
    )
    return {
        "request": asked,
        "decision": decision.outcome,
        "decided_by": list(decision.rule) if decision.rule else None,
        "checked_policy_version": decision.policy_version,
    }


def check(
    session: Session, *, state: Runtime, authorized: Authorized, request: PolicyCheck
) -> Decision:
    """A dry run in the caller's tenant: what the policy would decide, and the rule that
    decided. Recorded, since it reveals who may do what."""
    tenant = authorized.principal.tenant
    decision = state.policy.decide(
        request.sub, tenant, request.obj, request.act, extra_roles=request.roles
    )
    record_allowed(
        session,
        authorized=authorized,
        action="policy.checked",
        details=_decision_details(request, decision),
    )
    return decision


# --------------------------------------------------------------------------- policy as code
# A tenant's policy file holds the rules that name the tenant (p rules of it, g memberships
# in it); export, plan and apply see exactly those, as canonical lines.


@dataclass(frozen=True)
class PolicyExportResult:
    tenant: str
    version: store.VersionRecord | None
    rules: list[str]


@dataclass(frozen=True)
class PlanResult:
    tenant: str
    base: store.VersionRecord | None
    new_policy_version: str
    change: plan.RuleDiff
    access: plan.AccessReport


def export_policy(
    session: Session, *, state: Runtime, authorized: Authorized
) -> PolicyExportResult:
    """The tenant's rules at the head version, from the gateway's engine once it holds that
    version (one snapshot: the rules and the version that names them agree)."""
    tenant = authorized.principal.tenant
    head = store.head_version(session)
    return PolicyExportResult(tenant, head, _engine_at(state, head).tenant_lines(tenant))


def _lines_in_tenant(lines: Sequence[str], tenant: str, name: str) -> list[Rule]:
    parsed = []
    for index, line in enumerate(lines):
        param = f"{name}.{index}"
        try:
            rule = parse_rule(line.split(","))
        except PolicyError as exc:
            raise InvalidRequest(
                f"{name}[{index}]: {exc.message}", code=exc.reason, param=param
            ) from None
        if rule.ptype not in TENANT_FIELD:
            raise InvalidRequest(
                f"{name}[{index}]: classification links (g2) come from data source approval, "
                "not from a tenant's policy",
                code="rule_outside_tenant",
                param=param,
            )
        if rule.values[TENANT_FIELD[rule.ptype]] != tenant:
            raise InvalidRequest(
                f"{name}[{index}]: a rule here must name your tenant {tenant!r}",
                code="rule_outside_tenant",
                param=param,
            )
        parsed.append(rule)
    return parsed


def _version_conflict(exc: store.VersionConflictError) -> Conflict:
    current = exc.current
    return Conflict(
        exc.message,
        code="policy_version_conflict",
        param=exc.field,
        details={
            "expected_version": exc.expected,
            "current_version": None
            if current is None
            else {"id": current.id, "hash": current.hash},
        },
    )


def _engine_at(state: Runtime, head: store.VersionRecord | None) -> PolicyEngine:
    """A frozen copy of the gateway's engine at ``head`` (refreshed first when behind)."""
    want = (head.id, head.hash) if head is not None else (0, store.EMPTY_HASH)
    if (state.policy.version_id, state.policy.policy_version) != want:
        state.refresh_policy()
    engine = state.policy.what_if()
    if (engine.version_id, engine.policy_version) != want:
        if state.policy.integrity_error is not None:
            raise ServiceUnavailable(
                f"the stored rules do not match policy version {want[0]}: an operator must "
                "look at the server log"
            )
        raise ServiceUnavailable(
            f"the gateway's policy has not caught up with version {want[0]} yet: retry"
        )
    return engine


def plan_change(
    session: Session, *, state: Runtime, authorized: Authorized, body: PolicyPlanCreate
) -> PlanResult:
    """What applying the change would do: the checks apply makes (the same refusals), the
    hash the rule set would get, and whose access flips (policies.plan). Recorded, since it
    reveals who may do what."""
    tenant = authorized.principal.tenant
    added = _lines_in_tenant(body.add, tenant, "add")
    removed = _lines_in_tenant(body.remove, tenant, "remove")
    _refuse_admin_lockout(added)
    head = store.head_version(session)
    before = _engine_at(state, head)
    try:
        checked, added, removed = store.check_change(
            session,
            add=added,
            remove=removed,
            expect_version=body.base_version,
            holds=before.holds,
        )
    except store.VersionConflictError as exc:
        raise _version_conflict(exc) from None
    except PolicyError as exc:
        raise policy_error(exc) from None
    if checked != head:  # a commit in between (PostgreSQL reads each statement afresh)
        raise ServiceUnavailable("the policy changed while the plan was made: retry")
    after = before.what_if(added, removed)
    change = plan.RuleDiff(tuple(sorted(added)), tuple(sorted(removed)))
    access = plan.access_changes(before, after, tenant=tenant, change=change)
    record_allowed(
        session,
        authorized=authorized,
        action="policy.planned",
        details={
            "base_version_id": body.base_version,
            "new_policy_version": after.policy_version,
            "added_count": len(added),
            "removed_count": len(removed),
            "access_changes": len(access.changes),
        },
    )
    return PlanResult(tenant, head, after.policy_version, change, access)


def apply_change(
    session: Session, *, state: Runtime, authorized: Authorized, body: PolicyApplyCreate
) -> store.PolicyVersionInfo:
    """The change as one new version, only if the head is still ``expect_version``
    (optimistic concurrency: 409 ``policy_version_conflict`` with both versions)."""
    tenant = authorized.principal.tenant
    added = _lines_in_tenant(body.add, tenant, "add")
    removed = _lines_in_tenant(body.remove, tenant, "remove")
    _refuse_admin_lockout(added)
    try:
        version = store.change_rules(
            session,
            actor=authorized.principal.subject,
            add=added,
            remove=removed,
            reason=body.reason,
            expect_version=body.expect_version,
        )
    except store.VersionConflictError as exc:
        raise _version_conflict(exc) from None
    except PolicyError as exc:
        raise policy_error(exc) from None
    details = {"expected_version_id": body.expect_version, **_change_details(version)}
    record_allowed(session, authorized=authorized, action="policy.applied", details=details)
    after_commit(session, state.refresh_policy)
    return version


def explain(
    session: Session, *, state: Runtime, authorized: Authorized, request: PolicyExplainCreate
) -> tuple[str, Explanation]:
    """:func:`check` with every matching rule and the chains that reached them, in the
    caller's tenant. Returns the tenant and the explanation (what the console's what-if
    page shows too)."""
    tenant = authorized.principal.tenant
    if request.tenant not in (None, tenant):
        raise InvalidRequest(
            f"tenant must be {tenant!r}", code="tenant_not_visible", param="tenant"
        )
    explanation = state.policy.explain(
        request.sub, tenant, request.obj, request.act, extra_roles=request.roles
    )
    decision = explanation.decision
    record_allowed(
        session,
        authorized=authorized,
        action="policy.explained",
        details=_decision_details(request, decision) | {"matched": len(explanation.matched)},
    )
    return tenant, explanation


def diff_versions(
    session: Session, *, authorized: Authorized, from_id: int, to_id: int
) -> tuple[list[Rule], list[Rule]]:
    """What changed between two versions, as the caller may see it: rules of the caller's
    tenant and of the baseline (like the versions listing)."""
    try:
        added, removed = store.diff_versions(session, from_id=from_id, to_id=to_id)
    except PolicyError as exc:
        raise policy_error(exc) from None
    tenant = authorized.principal.tenant
    return (
        [r for r in added if _rule_visible_in(r, tenant)],
        [r for r in removed if _rule_visible_in(r, tenant)],
    )
