from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

# Loose shape checks only: the policy vocabulary (policies/vocabulary.py) is the one place
# that decides what a legal rule is, and it runs before Casbin sees anything.
RuleValue = Annotated[str, Field(max_length=256)]


class RuleIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ptype: Literal["p", "g"] = Field(
        description="p: sub, tenant, obj, act, eft; g: member, role, tenant"
    )
    values: list[RuleValue] = Field(min_length=1, max_length=6)


class RulesChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rules: list[RuleIn] = Field(min_length=1, max_length=1000)
    reason: str | None = Field(None, max_length=2000, pattern=r"^[^\x00]*$")


class RulePublic(BaseModel):
    id: int
    ptype: str
    values: list[str]


class RulesPage(BaseModel):
    object: Literal["list"] = "list"
    data: list[RulePublic]
    has_more: bool
    next_after: int | None = None


class PolicyVersionPublic(BaseModel):
    id: int
    hash: str
    parent_hash: str | None
    created_at: str
    actor: str | None = Field(description="hidden when the version changed another tenant only")
    rule_count: int
    reason: str | None = None
    changes: dict[str, list[list[str]]] | None = None


class PolicyVersionsPage(BaseModel):
    object: Literal["list"] = "list"
    data: list[PolicyVersionPublic]
    has_more: bool
    next_before: int | None = None


class PolicyCheck(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sub: str = Field(max_length=256, description="subject, e.g. user:alice")
    obj: str = Field(max_length=256, description="object, e.g. ds:claims-2024")
    act: str = Field(max_length=64, description="action, e.g. train")
    roles: list[Annotated[str, Field(max_length=64)]] = Field(
        default_factory=list, max_length=32, description="token roles to assume"
    )


class PolicyCheckResult(BaseModel):
    decision: Literal["allow", "deny", "error"]
    allowed: bool
    rule: list[str] | None
    policy_version: str
    error: str | None = None
    detail: str | None = None
    request: dict[str, Any]


# --- policy as code: export, plan, apply, explain, diff ----------------------------------
# Rules travel as canonical lines (policies.store): `p,user:bob,acme,ds:x,train,allow`,
# `g,user:bob,role:ml-engineer,acme`; values hold no comma, so a line is unambiguous.

RuleLine = Annotated[
    str,
    Field(
        max_length=1000,
        description="a rule's canonical line, e.g. p,user:bob,acme,ds:x,train,allow",
    ),
]
#: rules per plan or apply (the request body limit, 1 MiB by default, binds first).
MAX_CHANGE_RULES = 50_000
VersionId = Annotated[
    int, Field(ge=0, le=2**31 - 1, description="a policy version id; 0: none yet")
]


class PolicyVersionRef(BaseModel):
    id: int
    hash: str


class PolicyExport(BaseModel):
    """The rules that name the caller's tenant (p rules of it, g memberships in it): what a
    policy file holds. The baseline for every tenant (`*`) is the seed's and not here."""

    object: Literal["policy.export"] = "policy.export"
    tenant: str
    version: PolicyVersionRef | None
    rules: list[str]


class PolicyChangeBase(BaseModel):
    model_config = ConfigDict(extra="forbid")

    add: list[RuleLine] = Field(default_factory=list, max_length=MAX_CHANGE_RULES)
    remove: list[RuleLine] = Field(default_factory=list, max_length=MAX_CHANGE_RULES)


class PolicyPlanCreate(PolicyChangeBase):
    base_version: VersionId = Field(description="the version the change was computed against")


class PolicyApplyCreate(PolicyChangeBase):
    expect_version: VersionId = Field(description="refused with 409 unless this is the head")
    reason: str = Field(min_length=1, max_length=2000, pattern=r"^[^\x00]*$")


class AccessChangePublic(BaseModel):
    sub: str
    obj: str
    act: str
    before: Literal["allow", "deny"]
    after: Literal["allow", "deny"]
    rule_before: list[str] | None = Field(description="the rule that decided before")
    rule_after: list[str] | None = Field(description="the rule that decides after")
    alike: int = Field(
        0,
        description="other objects, classified alike and named by none of the subject's "
        "rules, that the same flip holds for",
    )


class PolicyPlanPublic(BaseModel):
    object: Literal["policy.plan"] = "policy.plan"
    tenant: str
    base_version: PolicyVersionRef | None
    new_policy_version: str = Field(description="the hash the rule set would have")
    added: list[str]
    removed: list[str]
    access_changes: list[AccessChangePublic]
    checked: int = Field(description="requests decided before and after the change")
    complete: bool = Field(description="false when more requests were touched than checked")


class PolicyExplainCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sub: str = Field(max_length=256, description="subject, e.g. user:alice")
    tenant: str | None = Field(None, max_length=64, description="your tenant (the default)")
    obj: str = Field(max_length=256, description="object, e.g. ds:claims-2024")
    act: str = Field(max_length=64, description="action, e.g. train")
    roles: list[Annotated[str, Field(max_length=64)]] = Field(
        default_factory=list, max_length=32, description="token roles to assume"
    )


class ChainLink(BaseModel):
    source: str
    target: str
    via: str = Field(description="the g or g2 rule's line, or `token` for a token role")


class MatchedRule(BaseModel):
    rule: list[str] = Field(description="sub, tenant, obj, act, eft")
    effect: Literal["allow", "deny"]
    deciding: bool
    object_match: Literal["exact", "wildcard", "class"]
    role_chain: list[ChainLink]
    object_chain: list[ChainLink]


class PolicyExplanation(BaseModel):
    decision: Literal["allow", "deny", "error"]
    allowed: bool
    policy_version: str
    rule: list[str] | None = Field(description="the rule that decided")
    deny_override: bool = Field(description="a deny decided although an allow matched")
    role_chain: list[ChainLink] = Field(description="how the subject reached the deciding rule")
    matched: list[MatchedRule]
    error: str | None = None
    detail: str | None = None
    request: dict[str, Any]


class PolicyVersionDiff(BaseModel):
    object: Literal["policy.diff"] = "policy.diff"
    from_version: int
    to_version: int
    added: list[str]
    removed: list[str]
