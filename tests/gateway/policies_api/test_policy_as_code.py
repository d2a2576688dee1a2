"""The routes behind `tunegate policy plan|apply|export|explain|diff`: export holds the
tenant's own rules; plan makes apply's checks and names the access flips; apply is one
version with its audit event, refused with both versions when the policy moved on;
explain follows /check's authorization and names every matching rule and chain."""

from __future__ import annotations

import pytest

GRANT = "p,user:bob,default,ds:claims,train,allow"
MEMBER = "g,user:bob,role:ml-engineer,default"


@pytest.fixture
def admin(token):
    return token("root", "admin")


def _export(client, headers) -> dict:
    response = client.get("/v1/policies/export", headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


def _apply(client, headers, *, expect, add=(), remove=(), reason="test"):
    body = {"expect_version": expect, "add": list(add), "remove": list(remove), "reason": reason}
    return client.post("/v1/policies/apply", json=body, headers=headers)


def _events(client, headers, action):
    response = client.get(
        "/v1/audit/events", params={"action": action, "limit": 100}, headers=headers
    )
    assert response.status_code == 200, response.text
    return response.json()["data"]


class TestExport:
    def test_holds_the_tenants_own_rules_and_the_head_version(self, client, admin, token):
        start = _export(client, admin)
        assert start["tenant"] == "default" and start["rules"] == []
        applied = _apply(client, admin, expect=start["version"]["id"], add=[GRANT, MEMBER])
        assert applied.status_code == 201, applied.text
        other = token("root", "admin", tenant="acme")
        assert (
            _apply(
                client, other, expect=applied.json()["id"], add=["p,user:x,acme,ds:y,read,allow"]
            ).status_code
            == 201
        )
        export = _export(client, admin)
        assert export["rules"] == [MEMBER, GRANT]  # canonical order, no baseline, no acme
        assert export["version"]["id"] == applied.json()["id"] + 1

    def test_needs_policy_read(self, client, token):
        response = client.get("/v1/policies/export", headers=token("bob", "ml-engineer"))
        assert response.status_code == 403


class TestPlan:
    def test_names_the_flips_and_the_version_it_would_make(self, client, admin):
        base = _export(client, admin)["version"]
        body = {"base_version": base["id"], "add": [MEMBER, GRANT]}
        response = client.post("/v1/policies/plan", json=body, headers=admin)
        assert response.status_code == 200, response.text
        plan = response.json()
        assert plan["base_version"] == base and plan["added"] == [MEMBER, GRANT]
        flips = {(c["sub"], c["obj"], c["act"]): c for c in plan["access_changes"]}
        train = flips[("user:bob", "ds:claims", "train")]
        assert (train["before"], train["after"]) == ("deny", "allow")
        assert train["rule_after"] == ["user:bob", "default", "ds:claims", "train", "allow"]
        # the membership brings the role's baseline grants
        assert flips[("user:bob", "job:*", "create")]["after"] == "allow"
        applied = _apply(client, admin, expect=base["id"], add=[MEMBER, GRANT]).json()
        assert applied["hash"] == plan["new_policy_version"]
        [event] = _events(client, admin, "policy.planned")
        assert event["details"]["access_changes"] == len(plan["access_changes"])

    @pytest.mark.parametrize(
        "add, remove, status, code",
        [
            ([], ["p,user:nobody,default,ds:x,read,allow"], 404, "rule_not_found"),
            (["g2,ds:x,class:restricted"], [], 400, "rule_outside_tenant"),
            (["p,user:bob,acme,ds:x,read,allow"], [], 400, "rule_outside_tenant"),
            (["p,user:bob,default,ds:x,fly,allow"], [], 400, "bad_action"),
            (["p,role:admin,default,policy,edit,deny"], [], 409, "last_admin"),
            ([GRANT, GRANT], [], 400, "duplicate_rule"),
            ([], [], 400, "empty_change"),
        ],
    )
    def test_refuses_what_apply_would(self, client, admin, add, remove, status, code):
        base = _export(client, admin)["version"]["id"]
        body = {"base_version": base, "add": add, "remove": remove}
        response = client.post("/v1/policies/plan", json=body, headers=admin)
        assert response.status_code == status, response.text
        assert response.json()["error"]["code"] == code
        applied = _apply(client, admin, expect=base, add=add, remove=remove)
        assert applied.status_code == status and applied.json()["error"]["code"] == code

    def test_a_stale_base_is_409_with_both_versions(self, client, admin):
        base = _export(client, admin)["version"]
        _apply(client, admin, expect=base["id"], add=[GRANT])
        response = client.post(
            "/v1/policies/plan", json={"base_version": base["id"], "add": [MEMBER]}, headers=admin
        )
        assert response.status_code == 409
        error = response.json()["error"]
        assert error["code"] == "policy_version_conflict"
        assert error["details"]["expected_version"] == base["id"]
        assert error["details"]["current_version"]["id"] == base["id"] + 1

    def test_compliance_may_plan_but_not_apply(self, client, admin, token):
        carol = token("carol", "compliance-officer")
        base = _export(client, carol)["version"]["id"]
        body = {"base_version": base, "add": [GRANT]}
        assert client.post("/v1/policies/plan", json=body, headers=carol).status_code == 200
        refused = _apply(client, carol, expect=base, add=[GRANT])
        assert refused.status_code == 403


class TestApply:
    def test_one_version_with_its_reason_and_its_event(self, client, admin):
        base = _export(client, admin)["version"]
        response = _apply(client, admin, expect=base["id"], add=[GRANT], reason="ticket 7")
        assert response.status_code == 201, response.text
        version = response.json()
        assert version["parent_hash"] == base["hash"] and version["reason"] == "ticket 7"
        [event] = _events(client, admin, "policy.applied")
        assert event["details"]["version_id"] == version["id"]
        assert event["details"]["expected_version_id"] == base["id"]
        assert event["details"]["added"] == [GRANT]

    def test_a_stale_expectation_changes_nothing(self, client, admin):
        base = _export(client, admin)["version"]["id"]
        assert _apply(client, admin, expect=base, add=[GRANT]).status_code == 201
        stale = _apply(client, admin, expect=base, add=[MEMBER])
        assert stale.status_code == 409
        details = stale.json()["error"]["details"]
        assert details["expected_version"] == base
        assert details["current_version"]["id"] == base + 1
        assert _export(client, admin)["rules"] == [GRANT]

    def test_needs_a_reason(self, client, admin):
        base = _export(client, admin)["version"]["id"]
        response = client.post(
            "/v1/policies/apply", json={"expect_version": base, "add": [GRANT]}, headers=admin
        )
        assert response.status_code == 400


class TestExplain:
    def test_follows_checks_authorization(self, client, token):
        body = {"sub": "user:bob", "obj": "ds:claims", "act": "train"}
        for headers, status in (
            (token("carol", "compliance-officer"), 200),
            (token("root", "admin"), 200),
            (token("bob", "ml-engineer"), 403),
        ):
            response = client.post("/v1/policies/explain", json=body, headers=headers)
            assert response.status_code == status, response.text
            check = client.post("/v1/policies/check", json=body, headers=headers)
            assert check.status_code == status

    def test_names_the_deny_that_overrides_and_the_role_chain(self, client, admin):
        base = _export(client, admin)["version"]["id"]
        added = [MEMBER, GRANT, "p,role:ml-engineer,default,ds:claims,train,deny"]
        assert _apply(client, admin, expect=base, add=added).status_code == 201
        body = {"sub": "user:bob", "tenant": "default", "obj": "ds:claims", "act": "train"}
        response = client.post("/v1/policies/explain", json=body, headers=admin)
        assert response.status_code == 200, response.text
        found = response.json()
        assert found["decision"] == "deny" and found["deny_override"]
        assert found["rule"] == ["role:ml-engineer", "default", "ds:claims", "train", "deny"]
        assert found["role_chain"] == [
            {"source": "user:bob", "target": "role:ml-engineer", "via": MEMBER}
        ]
        assert [(m["effect"], m["deciding"]) for m in found["matched"]] == [
            ("deny", True),
            ("allow", False),
        ]
        assert found["policy_version"] == _export(client, admin)["version"]["hash"]
        [event] = _events(client, admin, "policy.explained")
        assert event["details"]["decided_by"] == found["rule"]

    def test_another_tenant_is_not_visible(self, client, admin):
        body = {"sub": "user:bob", "tenant": "acme", "obj": "ds:claims", "act": "train"}
        response = client.post("/v1/policies/explain", json=body, headers=admin)
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "tenant_not_visible"


class TestDiff:
    def test_composes_the_versions_between_either_way(self, client, admin):
        base = _export(client, admin)["version"]["id"]
        _apply(client, admin, expect=base, add=[GRANT, MEMBER])
        _apply(client, admin, expect=base + 1, remove=[GRANT], add=["g,user:eve,role:x,default"])
        forward = client.get(
            "/v1/policies/diff", params={"from": base, "to": base + 2}, headers=admin
        ).json()
        assert forward["added"] == [
            "g,user:bob,role:ml-engineer,default",
            "g,user:eve,role:x,default",
        ]
        assert forward["removed"] == []
        back = client.get(
            "/v1/policies/diff", params={"from": base + 2, "to": base}, headers=admin
        ).json()
        assert (back["added"], back["removed"]) == (forward["removed"], forward["added"])

    def test_an_unknown_version_is_404(self, client, admin):
        response = client.get("/v1/policies/diff", params={"from": 1, "to": 999}, headers=admin)
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "policy_version_not_found"
