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
