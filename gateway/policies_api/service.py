"""Admin policy changes and dry runs. Never commits: the policy change, its new version
and its audit event land in the request's one transaction."""

from __future__ import annotations

from collections.abc import Sequence

from sqlmodel import Session

from gateway.audit_api.service import record_allowed
from gateway.authz import Authorized
from gateway.db import after_commit
from gateway.errors import Conflict, GatewayError, InvalidRequest
from gateway.policies_api.schemas import PolicyCheck, RuleIn
from gateway.runtime import Runtime
from policies import store
from policies.enforcer import Decision
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
        details={
            "version_id": version.id,
            "new_policy_version": version.hash,
            "parent_policy_version": version.parent_hash,
            # The full diff is the version's `changes`; the event names the first few.
            "added": [rule.line for rule in version.added][:AUDITED_RULES],
            "removed": [rule.line for rule in version.removed][:AUDITED_RULES],
            "added_count": len(version.added),
            "removed_count": len(version.removed),
            "rule_count": version.rule_count,
        },
    )
    after_commit(session, state.refresh_policy)
    return version


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


def check(
    session: Session, *, state: Runtime, authorized: Authorized, request: PolicyCheck
) -> Decision:
    """A dry run in the caller's tenant: what the policy would decide, and the rule that
    decided. Recorded, since it reveals who may do what."""
    tenant = authorized.principal.tenant
    decision = state.policy.decide(
        request.sub, tenant, request.obj, request.act, extra_roles=request.roles
    )
    # Only values the vocabulary accepted reach the trail; an invalid request is
    # recorded by its error code.
    asked = (
        {"sub": request.sub, "obj": request.obj, "act": request.act}
        if decision.error is None
        else {"error": decision.error}
    )
    record_allowed(
        session,
        authorized=authorized,
        action="policy.checked",
        details={
            "request": asked,
            "decision": decision.outcome,
            "decided_by": list(decision.rule) if decision.rule else None,
            "checked_policy_version": decision.policy_version,
        },
    )
    return decision
