from __future__ import annotations

import pytest

from policies.enforcer import PolicyEngine
from policies.store import read_seed
from policies.vocabulary import (
    ACTIONS,
    ACTIONS_BY_KIND,
    OBJECT_KINDS,
    PLATFORM_ADMIN_ROLE,
    PLATFORM_TENANT,
    PolicyValidationError,
    Rule,
    normalize_role_name,
    parse_rule,
    validate_request,
)

GOOD = [
    ["p", "role:admin", "*", "policy", "edit", "allow"],
    ["p", "user:alice@example.com", "default", "ds:sales-2024.v1", "train", "deny"],
    ["p", "user:bob", "t1", "ds:*", "list", "allow"],
    ["p", "role:ml-engineer", "*", "class:restricted", "train", "deny"],
    ["g", "user:bob", "role:ml-engineer", "default"],
    ["g", "role:lead", "role:ml-engineer", "default"],
    ["g2", "ds:x", "class:confidential"],
    ["g2", "class:secret", "class:confidential"],
]

BAD = [
    # (rule, reason, field)
    (["p", "role:admin", "*", "True) || (True", "edit", "allow"], "bad_chars", "obj"),
    (["p", "role:admin", "*", "policy", "edit", "allow) || (True"], "bad_effect", "eft"),
    (["p", "role:admin", "*", "policy,audit", "edit", "allow"], "bad_chars", "obj"),
    (["p", "role:admin", "*", "policy", "edit", "permit"], "bad_effect", "eft"),
    (["p", "role:admin", "*", "policy", "edit", ""], "bad_effect", "eft"),
    (["p", "role:admin", "*", "policy", "edit"], "field_count", "values"),
    (["p", "role:admin", "*", "policy", "edit", "allow", "x"], "field_count", "values"),
    (["p", "role:admin ", "*", "policy", "edit", "allow"], "bad_chars", "sub"),
    (["p", "role: admin", "*", "policy", "edit", "allow"], "bad_chars", "sub"),
    (["p", '"role:admin"', "*", "policy", "edit", "allow"], "bad_chars", "sub"),
    (["p", "role:admin", "*", "policy", "edit\n", "allow"], "bad_chars", "act"),
    (["p", "admin", "*", "policy", "edit", "allow"], "bad_subject", "sub"),
    (["p", "user:", "*", "policy", "edit", "allow"], "bad_subject", "sub"),
    (["p", "user:*", "*", "policy", "edit", "allow"], "bad_subject", "sub"),
    (["p", "role:a:b", "*", "policy", "edit", "allow"], "bad_role", "sub"),
    (["p", "role:admin", "t*", "policy", "edit", "allow"], "bad_tenant", "tenant"),
    (["p", "role:admin", "*", "secrets", "read", "allow"], "bad_kind", "obj"),
    (["p", "role:admin", "*", "file:1", "read", "allow"], "bad_kind", "obj"),
    (["p", "role:admin", "*", "ds", "read", "allow"], "bad_object", "obj"),
    (["p", "role:admin", "*", "ds:", "read", "allow"], "bad_object", "obj"),
    (["p", "role:admin", "*", "policy:x", "read", "allow"], "bad_object", "obj"),
    (["p", "role:admin", "*", "ds:a*", "read", "allow"], "bad_wildcard", "obj"),
    (["p", "role:admin", "*", "*", "read", "allow"], "bad_kind", "obj"),
    (["p", "role:admin", "*", "policy", "destroy", "allow"], "bad_action", "act"),
    (["p", "role:admin", "*", "policy", "train", "allow"], "action_not_for_kind", "act"),
    (["p", "role:admin", "*", "policy", 1, "allow"], "not_a_string", "act"),
    (["p", "role:admin", "*", "policy", "x" * 200, "allow"], "too_long", "act"),
    (["g", "user:bob", "role:x", "*"], "bad_tenant", "tenant"),
    (["g", "user:bob", "user:alice", "default"], "bad_role", "role"),
    (["g", "user:bob", "role:x"], "field_count", "values"),
    (["g2", "ds:x", "ds:y"], "bad_class", "class"),
    (["g2", "ds:*", "class:x"], "bad_wildcard", "obj"),
    (["g2", "model:x", "class:x"], "bad_object", "obj"),
    (["g2", "ds:x", "class:*"], "bad_wildcard", "class"),
    (["q", "a", "b"], "bad_ptype", "ptype"),
    ([], "field_count", "values"),
]


@pytest.mark.parametrize("rule", GOOD)
def test_good_rules_pass(rule):
    parsed = parse_rule(rule)
    assert parsed.as_list() == rule
    assert parse_rule(parsed.fields()) == parsed
    assert parse_rule({"ptype": rule[0], "values": rule[1:]}) == parsed


@pytest.mark.parametrize(("rule", "reason", "field"), BAD)
def test_bad_rules_are_refused_with_reason_and_field(rule, reason, field):
    with pytest.raises(PolicyValidationError) as info:
        parse_rule(rule)
    assert (info.value.reason, info.value.field) == (reason, field)
    assert info.value.http_status == 400
    assert info.value.as_dict()["reason"] == reason


def test_named_fields_and_unknown_keys():
    assert parse_rule(
        {"ptype": "p", "sub": "user:a", "tenant": "t", "obj": "audit", "act": "read"}
    ) == Rule.p("user:a", "t", "audit", "read", "allow")
    with pytest.raises(PolicyValidationError) as info:
        parse_rule(
            {"ptype": "p", "sub": "user:a", "tenant": "t", "obj": "audit", "act": "read", "v5": "x"}
        )
    assert (info.value.reason, info.value.field) == ("bad_field", "v5")
    with pytest.raises(PolicyValidationError) as info:
        parse_rule({"ptype": "g", "member": "user:a", "role": "role:x"})
    assert (info.value.reason, info.value.field) == ("field_count", "tenant")


@pytest.mark.parametrize(
    ("request_", "reason", "field"),
    [
        (("user:a", "*", "policy", "read"), "bad_tenant", "tenant"),
        (("user:a", "default", "policy", "train"), "action_not_for_kind", "act"),
        (("user:a", "default", "True) || (True", "read"), "bad_chars", "obj"),
        (("a", "default", "policy", "read"), "bad_subject", "sub"),
        (("user:a", "default", "ds:x*", "read"), "bad_wildcard", "obj"),
        ((None, "default", "policy", "read"), "not_a_string", "sub"),
    ],
)
def test_bad_requests_are_errors_that_deny(request_, reason, field):
    with pytest.raises(PolicyValidationError) as info:
        validate_request(*request_)
    assert (info.value.reason, info.value.field) == (reason, field)
    engine = PolicyEngine([Rule.p("user:a", "*", "policy", "read")])
    decision = engine.decide(*request_)
    assert not decision.allowed and decision.outcome == "error"
    assert (decision.error, decision.detail) == (reason, field)


def test_vocabulary_is_consistent():
    assert set(ACTIONS_BY_KIND) == OBJECT_KINDS
    assert {a for acts in ACTIONS_BY_KIND.values() for a in acts} == ACTIONS
    assert normalize_role_name("ml-engineer") == "role:ml-engineer"
    assert normalize_role_name("role:admin") == "role:admin"
    assert normalize_role_name("Domain Users") is None
    assert normalize_role_name("a,b") is None
    assert normalize_role_name(3) is None


def test_seed_is_valid_and_has_the_four_roles():
    seed = read_seed()
    subjects = {r.values[0] for r in seed if r.ptype == "p"}
    assert subjects == {
        "role:admin",
        "role:compliance-officer",
        "role:data-owner",
        "role:ml-engineer",
        "role:platform-admin",
    }
    engine = PolicyEngine(seed)

    def can(role, obj, act, sub="user:someone"):
        return engine.decide(sub, "default", obj, act, extra_roles=[role]).allowed

    assert can("admin", "policy", "edit") and can("admin", "base:smollm2", "create")
    assert not can("ml-engineer", "policy", "edit")
    co = "compliance-officer"
    assert can(co, "audit", "export") and can(co, "audit", "verify")
    assert can(co, "ds:x", "approve") and can(co, "model:m", "approve")
    assert can("data-owner", "ds:*", "create") and not can("data-owner", "ds:x", "approve")
    assert can("ml-engineer", "base:smollm2", "train") and can("ml-engineer", "job:*", "create")
    # engineers are not granted any specific data source by default
    assert not can("ml-engineer", "ds:x", "train") and not can("ml-engineer", "ds:x", "upload")
    assert not can("ml-engineer", "audit", "read")
    # nobody is anything without a role
    assert not engine.decide("user:someone", "default", "ds:*", "list").allowed


def test_the_platform_admin_holds_in_the_platform_domain_only():
    engine = PolicyEngine(read_seed())
    # only rules of the platform domain name the platform-admin role
    platform_rules = [r for r in read_seed() if r.values[0] == f"role:{PLATFORM_ADMIN_ROLE}"]
    assert platform_rules and {r.values[1] for r in platform_rules} == {PLATFORM_TENANT}

    def can(role, tenant, obj, act):
        return engine.decide("user:op", tenant, obj, act, extra_roles=[role]).allowed

    assert can(PLATFORM_ADMIN_ROLE, PLATFORM_TENANT, "base:smollm2", "retire")
    assert can(PLATFORM_ADMIN_ROLE, PLATFORM_TENANT, "base:*", "create")
    # in a tenant the role is nothing
    assert not can(PLATFORM_ADMIN_ROLE, "default", "base:smollm2", "retire")
    assert not can(PLATFORM_ADMIN_ROLE, "default", "base:*", "list")
    # a tenant admin's retire holds in its tenant (its own base models, gateway.base_models);
    # without a role in the platform domain nothing holds there
    assert can("admin", "default", "base:mine", "retire")
    assert not engine.decide("user:op", PLATFORM_TENANT, "base:smollm2", "retire").allowed
