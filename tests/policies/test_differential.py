"""The fast path decides exactly as a plain casbin.Enforcer on the same rules: the decision,
and the rule that decided (Casbin's enforce_ex explanation), on randomized rule sets with
role hierarchies (deeper than Casbin's limit, with cycles), g2 classes, deny rules, global
and per-tenant rules, wildcards and token roles."""

from __future__ import annotations

import random

import pytest

from policies.enforcer import (
    MAX_ROLE_DEPTH,
    PolicyEngine,
    build_casbin_enforcer,
    casbin_decide,
)
from policies.vocabulary import ACTIONS_BY_KIND, Rule

USERS = [f"user:u{i}" for i in range(8)] + ["user:admin"]
ROLES = [f"role:r{i}" for i in range(6)] + ["role:admin"]
TENANTS = ["t0", "t1", "t2"]
DS = [f"ds:d{i}" for i in range(8)]
CLASSES = [f"class:c{i}" for i in range(5)]
OBJECTS = (
    DS
    + CLASSES
    + [
        "ds:*",
        "class:*",
        "model:m1",
        "model:*",
        "base:b1",
        "base:*",
        "job:j1",
        "policy",
        "audit",
        "tenant",
    ]
)


def _kind(obj: str) -> str:
    return obj.split(":", 1)[0]


def random_rules(rng: random.Random, n_p: int = 150) -> list[Rule]:
    rules: set[Rule] = set()
    for _ in range(rng.randint(5, 40)):
        member = rng.choice(USERS + ROLES)
        rules.add(Rule.g(member, rng.choice(ROLES), rng.choice(TENANTS)))
    # a long role chain in one tenant: roles past Casbin's depth limit must not count
    chain = [f"role:chain{i}" for i in range(MAX_ROLE_DEPTH + 3)]
    tenant = rng.choice(TENANTS)
    rules.add(Rule.g(rng.choice(USERS), chain[0], tenant))
    for a, b in zip(chain, chain[1:], strict=False):
        rules.add(Rule.g(a, b, tenant))
    if rng.random() < 0.5:  # a cycle
        rules.add(Rule.g(chain[4], chain[1], tenant))
    for _ in range(rng.randint(3, 20)):
        rules.add(Rule.g2(rng.choice(DS + CLASSES), rng.choice(CLASSES)))
    cchain = [f"class:k{i}" for i in range(MAX_ROLE_DEPTH + 3)]
    rules.add(Rule.g2(rng.choice(DS), cchain[0]))
    for a, b in zip(cchain, cchain[1:], strict=False):
        rules.add(Rule.g2(a, b))
    subjects = USERS + ROLES + chain
    objects = OBJECTS + cchain
    for _ in range(n_p):
        obj = rng.choice(objects)
        act = rng.choice(sorted(ACTIONS_BY_KIND[_kind(obj)]))
        eft = "deny" if rng.random() < 0.25 else "allow"
        tenant = "*" if rng.random() < 0.4 else rng.choice(TENANTS)
        rules.add(Rule.p(rng.choice(subjects), tenant, obj, act, eft))
    return sorted(rules)


def random_request(rng: random.Random, rules: list[Rule]) -> tuple:
    if rng.random() < 0.5:
        # aim at an existing p rule so that many requests match something
        p = rng.choice([r for r in rules if r.ptype == "p"])
        sub, tenant, obj, act, _ = p.values
        if tenant == "*" or rng.random() < 0.2:
            tenant = rng.choice(TENANTS)
        if rng.random() < 0.5:
            sub = rng.choice(USERS + ROLES)
        if obj.endswith(":*") and rng.random() < 0.7:
            obj = rng.choice([o for o in OBJECTS if o.startswith(obj[:-1])] or [obj])
        if rng.random() < 0.3 and _kind(obj) in ("ds", "class"):
            obj = rng.choice(DS)
    else:
        sub = rng.choice(USERS + ROLES)
        tenant = rng.choice(TENANTS)
        obj = rng.choice(OBJECTS + [f"ds:new{rng.randint(0, 3)}"])
        act = rng.choice(sorted(ACTIONS_BY_KIND[_kind(obj)]))
    extra: list[str] = []
    if rng.random() < 0.3:
        extra = rng.sample(
            ["r0", "r1", "role:r2", "admin", "chain0", "bad role", "x,y"], rng.randint(1, 3)
        )
    return sub, tenant, obj, act, extra


def plain_decide(enforcer, sub, tenant, obj, act, extra):
    return casbin_decide(enforcer, sub, tenant, obj, act, extra)


@pytest.mark.parametrize("seed", range(12))
def test_fast_path_matches_casbin(seed):
    rng = random.Random(seed)
    rules = random_rules(rng)
    engine = PolicyEngine(rules)
    plain = build_casbin_enforcer(rules)
    outcomes = set()
    for _ in range(400):
        sub, tenant, obj, act, extra = random_request(rng, rules)
        got = engine.decide(sub, tenant, obj, act, extra_roles=extra)
        assert got.error is None, got
        want = plain_decide(plain, sub, tenant, obj, act, extra)
        assert (got.allowed, got.rule) == want, (sub, tenant, obj, act, extra)
        outcomes.add((got.allowed, got.rule is not None and got.rule[4]))
    # the requests exercised allow, deny-by-rule and deny-by-default
    assert {(True, "allow"), (False, "deny"), (False, False)} <= outcomes


@pytest.mark.parametrize("seed", range(4))
def test_incremental_changes_match_a_fresh_casbin(seed):
    rng = random.Random(1000 + seed)
    engine = PolicyEngine(random_rules(rng))
    for step in range(30):
        held = engine.rules()
        removed = rng.sample(held, rng.randint(0, 5))
        added = [r for r in random_rules(rng, n_p=10)[:8] if r not in held]
        engine.apply_changes(added, removed, version=f"v{step}", version_id=step + 1)
        assert engine.policy_version == f"v{step}"
    rules = engine.rules()
    assert engine.computed_hash() == PolicyEngine(rules).policy_version
    plain = build_casbin_enforcer(rules)
    for _ in range(300):
        sub, tenant, obj, act, extra = random_request(rng, rules)
        got = engine.decide(sub, tenant, obj, act, extra_roles=extra)
        assert (got.allowed, got.rule) == plain_decide(plain, sub, tenant, obj, act, extra)


def test_role_depth_limit_is_casbins():
    chain = [f"role:c{i}" for i in range(MAX_ROLE_DEPTH + 2)]
    rules = [Rule.g("user:u", chain[0], "t")]
    rules += [Rule.g(a, b, "t") for a, b in zip(chain, chain[1:], strict=False)]
    rules += [Rule.p(role, "t", "policy", "read") for role in chain]
    plain = build_casbin_enforcer(rules)
    for role in chain:
        solo = [r for r in rules if r.ptype == "g"] + [Rule.p(role, "t", "policy", "read")]
        want = build_casbin_enforcer(solo).enforce("user:u", "t", "policy", "read")
        assert PolicyEngine(solo).decide("user:u", "t", "policy", "read").allowed == want
    # depth: user -> c0 is 1 link; c8 is 9 links away and still found, c9 is not
    assert (
        PolicyEngine(rules[:10] + [Rule.p(chain[8], "t", "policy", "read")])
        .decide("user:u", "t", "policy", "read")
        .allowed
    )
    assert (
        not PolicyEngine(rules[:11] + [Rule.p(chain[9], "t", "policy", "read")])
        .decide("user:u", "t", "policy", "read")
        .allowed
    )
    assert plain.enforce("user:u", "t", "policy", "read")


def test_dry_run_names_the_deciding_rule():
    rules = [
        Rule.g("user:bob", "role:ml-engineer", "default"),
        Rule.g2("ds:x", "class:restricted"),
        Rule.p("role:ml-engineer", "*", "class:restricted", "train", "deny"),
        Rule.p("role:ml-engineer", "*", "ds:*", "list"),
        Rule.p("role:ml-engineer", "default", "ds:*", "list"),
        Rule.p("user:bob", "default", "ds:x", "train"),
        Rule.p("user:bob", "default", "ds:y", "train"),
    ]
    engine = PolicyEngine(rules)
    plain = build_casbin_enforcer(rules)
    cases = {
        # deny overrides the per-user grant, and is what decided
        ("user:bob", "default", "ds:x", "train"): (
            False,
            ("role:ml-engineer", "*", "class:restricted", "train", "deny"),
        ),
        ("user:bob", "default", "ds:y", "train"): (
            True,
            ("user:bob", "default", "ds:y", "train", "allow"),
        ),
        # two allows match: Casbin reports the last one in canonical order
        ("user:bob", "default", "ds:*", "list"): (
            True,
            ("role:ml-engineer", "default", "ds:*", "list", "allow"),
        ),
        ("user:bob", "default", "ds:z", "train"): (False, None),
        ("user:bob", "other", "ds:y", "train"): (False, None),
    }
    for request, want in cases.items():
        got = engine.decide(*request)
        assert (got.allowed, got.rule) == want
        allowed, explain = plain.enforce_ex(*request)
        assert (allowed, tuple(explain) or None) == want
        assert got.policy_version == engine.policy_version


def test_no_matching_rule_denies_and_token_roles_count_per_tenant():
    engine = PolicyEngine([Rule.p("role:admin", "*", "policy", "edit")])
    assert not engine.decide("user:a", "default", "policy", "edit").allowed
    assert engine.decide("user:a", "default", "policy", "edit", extra_roles=["admin"]).allowed
    assert engine.decide("user:a", "default", "policy", "edit", extra_roles=["role:admin"]).allowed
    # a user literally called admin is not the role
    assert not engine.decide("user:admin", "default", "policy", "edit").allowed
    tenant_only = PolicyEngine([Rule.p("role:admin", "t1", "policy", "edit")])
    assert not tenant_only.decide("user:a", "t2", "policy", "edit", extra_roles=["admin"]).allowed
    assert tenant_only.decide("user:a", "t1", "policy", "edit", extra_roles=["admin"]).allowed
