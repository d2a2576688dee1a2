from __future__ import annotations

import hashlib
import json
import threading

import pytest
from sqlalchemy import func, select, text
from sqlmodel import Session

from policies import store
from policies.models import CasbinRule, PolicyVersion
from policies.store import (
    PolicyConflictError,
    RuleExistsError,
    RuleNotFoundError,
    canonical_bytes,
    change_rules,
    ruleset_hash,
)
from policies.vocabulary import PolicyValidationError, Rule

ALICE_ADMIN = Rule.g("user:alice", "role:admin", "default")
BOB_ADMIN = Rule.g("user:bob", "role:admin", "default")
GRANT = Rule.p("user:bob", "default", "ds:x", "train")


def test_canonical_bytes_fixed_vector():
    rules = [
        Rule.p("user:bob", "default", "ds:x", "train", "allow"),
        Rule.g2("ds:x", "class:confidential"),
        Rule.g("user:bob", "role:ml-engineer", "default"),
        Rule.p("role:admin", "*", "policy", "edit", "allow"),
        Rule.g("user:bob", "role:ml-engineer", "default"),  # duplicates count once
    ]
    expected = (
        b"g,user:bob,role:ml-engineer,default\n"
        b"g2,ds:x,class:confidential\n"
        b"p,role:admin,*,policy,edit,allow\n"
        b"p,user:bob,default,ds:x,train,allow\n"
    )
    assert canonical_bytes(rules) == expected
    assert ruleset_hash(rules) == hashlib.sha256(expected).hexdigest()
    # computed independently: printf "<the four lines>" | sha256sum
    assert ruleset_hash(rules) == "4668ce2bd88295be712587bb01ba966bad8109d3559c963e2049bda59097b273"
    assert hashlib.sha256(b"").hexdigest() == store.EMPTY_HASH


def _seeded(fresh_engine):
    engine = fresh_engine()
    with Session(engine) as session:
        first = store.seed_if_empty(session, actor="system:test")
        session.commit()
    return engine, first


def test_seed_creates_version_one(fresh_engine):
    engine, first = _seeded(fresh_engine)
    seed = store.read_seed()
    assert first.id == 1 and first.parent_hash is None
    assert first.hash == ruleset_hash(seed) and first.rule_count == len(seed)
    assert sorted(first.added) == sorted(seed) and first.removed == ()
    with Session(engine) as session:
        assert store.seed_if_empty(session, actor="system:test") is None
        assert store.load_rules(session) == sorted(seed)
        row = session.get(PolicyVersion, 1)
        assert json.loads(row.changes)["added"][0] == sorted(seed)[0].as_list()
        assert row.actor == "system:test"


def test_change_makes_a_chained_version_with_canonical_changes(fresh_engine):
    engine, first = _seeded(fresh_engine)
    with Session(engine) as session:
        v2 = change_rules(session, actor="user:root", add=[GRANT, ALICE_ADMIN], reason="demo")
        session.commit()
    assert (v2.id, v2.parent_hash, v2.rule_count) == (2, first.hash, first.rule_count + 2)
    with Session(engine) as session:
        rules = store.load_rules(session)
        assert v2.hash == ruleset_hash(rules)
        row = session.get(PolicyVersion, 2)
        assert bytes(row.changes) == (
            b'{"added":[["g","user:alice","role:admin","default"],'
            b'["p","user:bob","default","ds:x","train","allow"]],"removed":[]}'
        )
        assert (row.actor, row.reason, row.created_at[-1]) == ("user:root", "demo", "Z")
        got = store.get_version(session, id=2)
        assert got == v2
        v3 = store.remove_rule(session, rule=GRANT.as_list(), actor="user:root")
        session.commit()
    assert v3.parent_hash == v2.hash and v3.removed == (GRANT,)
    assert v3.hash == ruleset_hash(set(rules) - {GRANT})


def test_duplicate_add_and_missing_remove_are_clear_errors(fresh_engine):
    engine, _ = _seeded(fresh_engine)
    with Session(engine) as session:
        store.add_rule(session, rule=GRANT, actor="user:root")
        session.commit()
        with pytest.raises(RuleExistsError) as info:
            store.add_rule(session, rule=GRANT, actor="user:root")
        assert (info.value.reason, info.value.http_status, info.value.rule) == (
            "rule_exists",
            409,
            GRANT,
        )
        with pytest.raises(RuleNotFoundError) as info:
            store.remove_rule(
                session, rule=Rule.p("user:x", "default", "ds:y", "read"), actor="user:root"
            )
        assert (info.value.reason, info.value.http_status) == ("rule_not_found", 404)
        with pytest.raises(PolicyValidationError) as info:
            change_rules(session, actor="user:root", add=[GRANT], remove=[GRANT])
        assert info.value.reason == "rule_in_add_and_remove"
        with pytest.raises(PolicyValidationError) as info:
            change_rules(session, actor="user:root", add=[GRANT, GRANT.as_list()])
        assert info.value.reason == "duplicate_rule"
        with pytest.raises(PolicyValidationError) as info:
            change_rules(session, actor="user:root")
        assert info.value.reason == "empty_change"
        with pytest.raises(PolicyValidationError) as info:
            store.add_rule(
                session,
                rule=["p", "role:x", "*", "True) || (True", "read", "allow"],
                actor="user:root",
            )
        assert (info.value.reason, info.value.field) == ("bad_chars", "obj")
        session.rollback()
        assert store.head_version(session).id == 2


def test_no_tenant_is_left_without_an_admin(fresh_engine):
    engine, _ = _seeded(fresh_engine)
    with Session(engine) as session:
        store.add_rules(session, rules=[ALICE_ADMIN, BOB_ADMIN], actor="user:root")
        store.remove_rule(session, rule=ALICE_ADMIN, actor="user:root")
        with pytest.raises(PolicyConflictError) as info:
            store.remove_rule(session, rule=BOB_ADMIN, actor="user:root")
        assert (info.value.reason, info.value.http_status, info.value.field) == (
            "last_admin",
            409,
            "tenant",
        )
        # handing over in one change is fine
        store.change_rules(session, actor="user:root", add=[ALICE_ADMIN], remove=[BOB_ADMIN])
        # a role (not a user) holding admin does not count as an admin
        lead = Rule.g("role:lead", "role:admin", "default")
        store.add_rule(session, rule=lead, actor="user:root")
        with pytest.raises(PolicyConflictError):
            store.remove_rule(session, rule=ALICE_ADMIN, actor="user:root")
        # other tenants are independent
        store.add_rule(session, rule=Rule.g("user:carol", "role:admin", "t2"), actor="user:root")
        assert store.head_version(session).id == 6
        session.rollback()


def test_functions_never_commit(fresh_engine):
    engine, _ = _seeded(fresh_engine)
    with Session(engine) as session:
        store.add_rule(session, rule=GRANT, actor="user:root")
        session.rollback()
    with Session(engine) as session:
        assert store.head_version(session).id == 1
        assert GRANT not in store.load_rules(session)


def test_list_rules_filters_and_pages(fresh_engine):
    engine, _ = _seeded(fresh_engine)
    grants = [Rule.p("user:bob", "default", f"ds:d{i}", "train") for i in range(7)]
    with Session(engine) as session:
        store.add_rules(
            session,
            rules=grants
            + [Rule.g("user:bob", "role:ml-engineer", "default"), Rule.g2("ds:d1", "class:c")],
            actor="user:root",
        )
        session.commit()
        page = store.list_rules(session, sub="user:bob", ptype="p", limit=3)
        seen = list(page.items)
        while page.next_after is not None:
            page = store.list_rules(
                session, sub="user:bob", ptype="p", limit=3, after=page.next_after
            )
            seen += page.items
        assert [s.rule for s in seen] == grants
        assert seen[0].as_dict()["obj"] == "ds:d0"
        both = store.list_rules(session, sub="user:bob", limit=100).items
        assert {s.rule.ptype for s in both} == {"p", "g"} and len(both) == 8
        assert len(store.list_rules(session, tenant="default", limit=1000).items) == 8
        assert [s.rule for s in store.list_rules(session, obj="ds:d1").items] == [
            grants[1],
            Rule.g2("ds:d1", "class:c"),
        ]
        assert [s.rule for s in store.list_rules(session, class_="class:c").items] == [
            Rule.g2("ds:d1", "class:c")
        ]
        admin_rules = store.list_rules(session, sub="role:admin", eft="allow", limit=1000).items
        assert len(admin_rules) == sum(1 for r in store.read_seed() if r.values[0] == "role:admin")
        assert store.list_rules(session, act="edit", ptype="g").items == []
        with pytest.raises(PolicyValidationError) as info:
            store.list_rules(session, obj="x' OR '1'='1")
        assert info.value.reason == "bad_chars"
        with pytest.raises(PolicyValidationError):
            store.list_rules(session, limit=0)


def test_list_versions_newest_first(fresh_engine):
    engine, _ = _seeded(fresh_engine)
    with Session(engine) as session:
        for i in range(4):
            store.add_rule(
                session, rule=Rule.p("user:bob", "default", f"ds:d{i}", "read"), actor="user:root"
            )
        session.commit()
        page = store.list_versions(session, limit=3)
        assert [v.id for v in page.items] == [5, 4, 3] and page.next_before == 3
        rest = store.list_versions(session, limit=3, before=page.next_before)
        assert [v.id for v in rest.items] == [2, 1] and rest.next_before is None
        chain = page.items + rest.items
        assert all(a.parent_hash == b.hash for a, b in zip(chain, chain[1:], strict=False))
        assert chain[0].as_dict()["changes"]["added"] == [
            ["p", "user:bob", "default", "ds:d3", "read", "allow"]
        ]


def test_concurrent_edits_are_all_kept_in_one_chain(fresh_engine):
    engine, _ = _seeded(fresh_engine)
    errors: list[BaseException] = []

    def writer(w: int) -> None:
        try:
            for i in range(5):
                with Session(engine) as session:
                    rule = Rule.p(f"user:w{w}", "default", f"ds:d{i}", "read")
                    store.add_rule(session, rule=rule, actor=f"user:w{w}")
                    session.commit()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with Session(engine) as session:
        rules = store.load_rules(session)
        assert sum(1 for r in rules if r.values[0].startswith("user:w")) == 30
        versions = store.list_versions(session, limit=1000).items[::-1]
        assert len(versions) == 31
        assert [v.id for v in versions] == sorted(v.id for v in versions)
        assert all(b.parent_hash == a.hash for a, b in zip(versions, versions[1:], strict=False))
        assert versions[-1].hash == ruleset_hash(rules)
        count = session.connection().execute(select(func.count()).select_from(CasbinRule))
        assert count.scalar_one() == len(rules)


def test_edits_are_incremental_row_changes(fresh_engine):
    """A change touches only its rows: ids of the other rows stay as they were."""
    engine, _ = _seeded(fresh_engine)
    with Session(engine) as session:
        query = text("SELECT id, v0 || v2 || v3 FROM casbin_rule")
        before = dict(session.connection().execute(query).all())
        store.change_rules(
            session,
            actor="user:root",
            add=[GRANT],
            remove=[Rule.p("role:admin", "*", "tenant", "edit")],
        )
        after = dict(session.connection().execute(query).all())
        session.rollback()
    kept = {k: v for k, v in before.items() if v != "role:admintenantedit"}
    assert {k: after[k] for k in kept} == kept and len(after) == len(before)
