"""Authorization values, with no web framework in them: what an allowed decision hands to
a service, and the refusal a denied one becomes.

The decision itself is the policy engine's (policies.enforcer); the route dependency
(gateway.deps.Authorize) asks it, and a denial is recorded and raised by the audit service
(gateway.audit_api.service.deny), the one place a refusal is written down."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.errors import PermissionDenied
from gateway.security import Principal
from policies.enforcer import Decision, PolicyEngine


@dataclass(frozen=True)
class Authorized:
    """What an allowed decision hands to the service, so its audit event can say which
    rule and which policy version allowed the change."""

    principal: Principal
    obj: str
    act: str
    policy_version: str
    rule: tuple[str, ...] | None
    route: str
    method: str

    def decision_record(self) -> dict[str, object]:
        """The decision as a job row keeps it (and its dossier shows it)."""
        return {
            "kind": "policy",
            "object": self.obj,
            "action": self.act,
            "allowed": True,
            "policy_version": self.policy_version,
            "rule": list(self.rule) if self.rule else None,
        }


def decide(
    policy: PolicyEngine, principal: Principal, obj: str, act: str, *, route: str, method: str
) -> Authorized | Decision:
    """Authorized when the policy allows; else the refusing Decision, to be recorded and
    raised (gateway.audit_api.service.deny). In memory: microseconds."""
    decision = policy.decide(
        principal.subject, principal.tenant, obj, act, extra_roles=principal.roles
    )
    if not decision.allowed:
        return decision
    return Authorized(
        principal=principal,
        obj=obj,
        act=act,
        policy_version=decision.policy_version,
        rule=decision.rule,
        route=route,
        method=method,
    )


def allows(policy: PolicyEngine, principal: Principal, obj: str, act: str) -> bool:
    """Whether the policy lets ``principal`` ``act`` on ``obj``: what a listing asks of each
    row, so it never shows what a direct read would refuse."""
    decision = policy.decide(
        principal.subject, principal.tenant, obj, act, extra_roles=principal.roles
    )
    return decision.allowed


def refusal(decision: Decision, *, principal: Principal, obj: str, act: str) -> PermissionDenied:
    """The 403 a denial is answered with. An error while deciding names no object: the
    request was malformed, and echoing it would help no-one."""
    if decision.error is None:
        return PermissionDenied(
            f"{principal.subject} may not {act} {obj}",
            code="permission_denied",
            details={"object": obj, "action": act, "policy_version": decision.policy_version},
        )
    return PermissionDenied(
        f"the request could not be authorized ({decision.error})",
        code="authorization_error",
        details={"object": None, "action": act, "policy_version": decision.policy_version},
    )
