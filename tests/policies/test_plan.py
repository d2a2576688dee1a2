"""Planning a change (policies.plan) and the engine's what-if and explanation it rests on
(policies.enforcer): a what-if engine decides as a fresh engine on the changed rules; an
explanation decides as `decide` does and its chains are made of rules that exist; the
access changes of a random change are exactly the flips a brute force over every request
finds (an object no rule of the subject names stands as `<kind>:*`)."""

from __future__ import annotations

import random

import pytest

from policies.enforcer import PolicyEngine
from policies.plan import RuleDiff, access_changes, diff, touched_requests
from policies.store import ruleset_hash
from policies.vocabulary import ACTIONS_BY_KIND, PolicyValidationError, Rule
from tests.policies.test_differential import (
    CLASSES,
    DS,
    OBJECTS,
    ROLES,
    TENANTS,
    USERS,
    random_request,
    random_rules,
)


def _kind(obj: str) -> str:
    return obj.split(":", 1)[0]


class TestDiff:
    def test_added_and_removed_in_canonical_order(self):
        live = ["p,user:a,t,ds:x,read,allow", "g,user:a,role:r,t"]
        desired = ["g,user:a,role:r,t", "p,user:b,t,ds:x,read,deny", "g,user:b,role:r,t"]
        change = diff(live, desired)
        assert [r.line for r in change.added] == [
            "g,user:b,role:r,t",
            "p,user:b,t,ds:x,read,deny",
        ]
        assert [r.line for r in change.removed] == ["p,user:a,t,ds:x,read,allow"]
        assert change and change.size == 3
        assert not diff(live, reversed(live))

    def test_a_line_outside_the_vocabulary_is_refused(self):
        with pytest.raises(PolicyValidationError):
            diff([], ["p,user:a,t,ds:x,fly,allow"])


class TestWhatIf:
    @pytest.mark.parametrize("seed", range(4))
    def test_decides_as_a_fresh_engine_and_leaves_the_original(self, seed):
        rng = random.Random(seed)
        rules = random_rules(rng)
        engine = PolicyEngine(rules, version="v1", version_id=1)
        removed = rng.sample(rules, 10)
        added = [r for r in random_rules(rng, n_p=20) if r not in rules][:10]
        after = engine.what_if(added, removed)
        changed = sorted(set(rules) - set(removed) | set(added))
        fresh = PolicyEngine(changed)
        assert after.policy_version == ruleset_hash(changed) == fresh.policy_version
        assert engine.policy_version == "v1" and engine.rules() == rules
        for _ in range(300):
            sub, tenant, obj, act, extra = random_request(rng, changed)
            assert after.decide(sub, tenant, obj, act, extra) == fresh.decide(
                sub, tenant, obj, act, extra
            )

    def test_an_empty_change_is_a_frozen_copy(self):
        engine = PolicyEngine([Rule.p("user:a", "t", "policy", "read")], version="v", version_id=3)
        copy = engine.what_if()
        engine.apply_changes(
            [], [Rule.p("user:a", "t", "policy", "read")], version="w", version_id=4
        )
        assert (copy.policy_version, copy.version_id) == ("v", 3)
        assert copy.decide("user:a", "t", "policy", "read").allowed
        with pytest.raises(KeyError):
            copy.what_if(added=[Rule.p("user:a", "t", "policy", "read")])


class TestEngineReads:
    @pytest.mark.parametrize("seed", range(3))
    def test_decide_many_decides_as_decide(self, seed):
        rng = random.Random(200 + seed)
        rules = random_rules(rng)
        engine = PolicyEngine(rules)
        for tenant in TENANTS:
            asked = [random_request(rng, rules) for _ in range(200)]
            requests = [(sub, obj, act) for sub, _, obj, act, _ in asked]
            requests += [
                ("bob", "ds:x", "read"),
                ("user:a", "ds:x", "fly"),
                ("user:a", "x", "read"),
            ]
            many = engine.decide_many(tenant, requests)
            assert many == [engine.decide(sub, tenant, obj, act) for sub, obj, act in requests]
            assert sum(d.allowed for d in many) > 5 and sum(bool(d.error) for d in many) == 3
        assert engine.decide_many("a b", [("user:a", "ds:x", "read")])[0].error == "bad_chars"

    def test_tenant_lines_and_holds(self):
        rules = [
            Rule.p("user:a", "acme", "ds:x", "read"),
            Rule.p("user:a", "acme-2", "ds:x", "read"),
            Rule.p("user:a", "*", "ds:x", "read"),
            Rule.g("user:a", "role:r", "acme"),
            Rule.g("user:a", "role:r", "xacme"),
            Rule.g2("ds:x", "class:acme"),
        ]
        engine = PolicyEngine(rules)
        assert engine.tenant_lines("acme") == [
            "g,user:a,role:r,acme",
            "p,user:a,acme,ds:x,read,allow",
        ]
        assert engine.holds(rules[0]) and not engine.holds(Rule.p("user:b", "acme", "ds:x", "read"))


class TestExplain:
    @pytest.mark.parametrize("seed", range(6))
    def test_agrees_with_decide_and_its_chains_are_real_rules(self, seed):
        rng = random.Random(100 + seed)
        rules = random_rules(rng)
        lines = {r.line for r in rules}
        engine = PolicyEngine(rules)
        for _ in range(300):
            sub, tenant, obj, act, extra = random_request(rng, rules)
            decision = engine.decide(sub, tenant, obj, act, extra)
            explanation = engine.explain(sub, tenant, obj, act, extra)
            assert explanation.decision == decision
            deciding = explanation.deciding
            assert (deciding.rule if deciding else None) == decision.rule
            for match in explanation.matched:
                assert match.line in lines and match.rule[3] == act
                assert match.rule[1] in (tenant, "*")
                _check_chain(match.role_chain, sub, match.rule[0], lines, token_ok=True)
                if match.object_match == "class":
                    _check_chain(match.object_chain, obj, match.rule[2], lines)
                else:
                    assert match.object_chain == ()
            denies = [m for m in explanation.matched if m.effect == "deny"]
            allows = [m for m in explanation.matched if m.effect == "allow"]
            assert explanation.deny_override == bool(denies and allows)

    def test_names_the_deny_that_overrides_and_the_chains_to_it(self):
        rules = [
            Rule.g("user:bob", "role:ml-engineer", "acme"),
            Rule.g("role:ml-engineer", "role:staff", "acme"),
            Rule.g2("ds:x", "class:restricted"),
            Rule.p("role:staff", "*", "class:restricted", "train", "deny"),
            Rule.p("user:bob", "acme", "ds:x", "train"),
            Rule.p("role:ml-engineer", "acme", "ds:*", "train"),
        ]
        explanation = PolicyEngine(rules).explain("user:bob", "acme", "ds:x", "train")
        assert not explanation.decision.allowed and explanation.deny_override
        deciding = explanation.deciding
        assert deciding.rule == ("role:staff", "*", "class:restricted", "train", "deny")
        assert [(link.source, link.target, link.via) for link in deciding.role_chain] == [
            ("user:bob", "role:ml-engineer", "g,user:bob,role:ml-engineer,acme"),
            ("role:ml-engineer", "role:staff", "g,role:ml-engineer,role:staff,acme"),
        ]
        assert [link.via for link in deciding.object_chain] == ["g2,ds:x,class:restricted"]
        assert {m.object_match for m in explanation.matched} == {"class", "exact", "wildcard"}

    def test_a_token_role_is_a_link_of_its_own(self):
        engine = PolicyEngine([Rule.p("role:ml-engineer", "*", "model:*", "use")])
        explanation = engine.explain("user:bob", "acme", "model:m1", "use", ["ml-engineer"])
        assert explanation.decision.allowed
        [link] = explanation.deciding.role_chain
        assert (link.source, link.target, link.via) == ("user:bob", "role:ml-engineer", "token")

    def test_an_invalid_request_is_a_deny_with_its_reason(self):
        explanation = PolicyEngine([]).explain("bob", "acme", "ds:x", "train")
        assert explanation.decision.error == "bad_subject" and explanation.matched == ()


def _check_chain(chain, start, end, lines, *, token_ok=False):
    node = start
    for link in chain:
        assert link.source == node
        assert link.via in lines or (token_ok and link.via == "token" and link.source == start)
        node = link.target
    assert node == end


# --------------------------------------------------------------------------- access changes

SUBJECTS = USERS + ROLES
UNIVERSE_OBJECTS = OBJECTS + ["ds:new0"]


def _random_change(rng: random.Random, rules: list[Rule], tenant: str) -> RuleDiff:
    mine = [r for r in rules if r.ptype != "g2" and r.values[1 if r.ptype == "p" else 2] == tenant]
    removed = set(rng.sample(mine, min(len(mine), rng.randint(0, 6))))
    added: set[Rule] = set()
    for _ in range(rng.randint(1, 6)):
        if rng.random() < 0.35:
            added.add(Rule.g(rng.choice(SUBJECTS), rng.choice(ROLES), tenant))
        else:
            obj = rng.choice(UNIVERSE_OBJECTS + DS + CLASSES)
            act = rng.choice(sorted(ACTIONS_BY_KIND[_kind(obj)]))
            eft = "deny" if rng.random() < 0.3 else "allow"
            added.add(Rule.p(rng.choice(SUBJECTS), tenant, obj, act, eft))
    added -= set(rules)
    return RuleDiff(tuple(sorted(added)), tuple(sorted(removed)))


@pytest.mark.parametrize("seed", range(10))
def test_access_changes_are_every_flip_a_brute_force_finds(seed):
    rng = random.Random(500 + seed)
    rules = random_rules(rng, n_p=80)
    # many sources in few classes, so that some stand for others classified alike
    rules = sorted({*rules, *(Rule.g2(f"ds:m{i}", rng.choice(CLASSES[:2])) for i in range(20))})
    tenant = rng.choice(TENANTS)
    change = _random_change(rng, rules, tenant)
    before = PolicyEngine(rules)
    after = before.what_if(change.added, change.removed)
    report = access_changes(before, after, tenant=tenant, change=change)
    reported = {(c.sub, c.obj, c.act): (c.before.allowed, c.after.allowed) for c in report.changes}
    standing = {  # (sub, act, kind, classes before, after) -> the flip reported for them
        (c.sub, c.act, *_alike(before, after, c.obj)): (c.before.allowed, c.after.allowed)
        for c in report.changes
        if c.alike
    }
    assert report.complete and report.checked >= len(reported)
    objects = set(UNIVERSE_OBJECTS) | {v for r in rules if r.ptype == "g2" for v in r.values}
    subjects = set(SUBJECTS) | {r.values[0] for r in rules if r.ptype in ("p", "g")}
    flips = 0
    for sub in sorted(subjects):
        for obj in sorted(objects):
            for act in sorted(ACTIONS_BY_KIND[_kind(obj)]):
                was = before.decide(sub, tenant, obj, act).allowed
                now = after.decide(sub, tenant, obj, act).allowed
                if was == now:
                    assert (sub, obj, act) not in reported
                    continue
                flips += 1
                stand_in = (sub, f"{_kind(obj)}:*", act)
                found = (
                    reported.get((sub, obj, act))
                    or reported.get(stand_in)
                    or standing.get((sub, act, *_alike(before, after, obj)))
                )
                assert found == (was, now), (sub, obj, act, change)
    assert flips >= len(reported) - sum(1 for k in reported if k[1] not in objects)


def _alike(before, after, obj):
    return _kind(obj), before.classes_of(obj), after.classes_of(obj)


def test_a_new_member_gains_the_roles_grants_and_its_denies():
    rules = [
        Rule.g2("ds:x", "class:restricted"),
        Rule.p("role:ml-engineer", "*", "class:restricted", "train", "deny"),
        Rule.p("role:ml-engineer", "*", "model:*", "use"),
        Rule.p("user:bob", "acme", "ds:x", "train"),
    ]
    before = PolicyEngine(rules)
    change = RuleDiff(added=(Rule.g("user:bob", "role:ml-engineer", "acme"),))
    after = before.what_if(change.added)
    flips = {
        (c.sub, c.obj, c.act, c.gained)
        for c in access_changes(before, after, tenant="acme", change=change).changes
    }
    assert flips == {
        ("user:bob", "model:*", "use", True),
        ("user:bob", "ds:x", "train", False),  # his own grant, now under the role's deny
    }


def test_sources_classified_alike_are_decided_once():
    rules = [Rule.g2(f"ds:s{i}", "class:public") for i in range(30)]
    rules += [Rule.g2("ds:s0", "class:pii"), Rule.p("user:bob", "acme", "ds:s1", "read", "deny")]
    rules += [Rule.p("role:analyst", "*", "class:public", "read")]
    before = PolicyEngine(rules)
    change = RuleDiff(added=(Rule.g("user:bob", "role:analyst", "acme"),))
    after = before.what_if(change.added)
    report = access_changes(before, after, tenant="acme", change=change)
    flips = {(c.obj, c.alike) for c in report.changes}
    # s0 (also pii) and s1 (bob's own deny, no flip) apart; s2..s29 stand as one
    assert flips == {("class:public", 0), ("ds:s0", 0), ("ds:s10", 27)}
    assert report.checked == 4


def test_touched_requests_stop_at_the_limit():
    rules = [Rule.g(f"user:u{i}", "role:r", "acme") for i in range(50)]
    before = PolicyEngine(rules)
    change = RuleDiff(added=(Rule.p("role:r", "acme", "policy", "read"),))
    after = before.what_if(change.added)
    assert len(touched_requests(before, after, tenant="acme", change=change)) == 51
    report = access_changes(before, after, tenant="acme", change=change, limit=10)
    assert not report.complete and report.checked == 10 and len(report.changes) == 10
