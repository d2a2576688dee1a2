from __future__ import annotations

import hashlib

import pytest
from sqlmodel import Session

from gateway.data_sources import service
from gateway.data_sources.models import DataSource
from gateway.db import make_engine
from gateway.errors import GatewayError
from policies import store

PROPOSAL = {
    "name": "claims 2024",
    "description": "Insurance claims with adjuster notes",
    "classification": "confidential",
    "contains_personal_data": True,
    "legal_basis": "contract",
    "allowed_purposes": ["claims-triage"],
    "owner": "dora",
    "retention_days": 365,
    "pii_action": "redact",
}


@pytest.fixture
def people(token):
    return {
        "dora": token("dora", "data-owner"),
        "carol": token("carol", "compliance-officer"),
        "cora": token("cora", "compliance-officer"),
        "bob": token("bob", "ml-engineer"),
        "ada": token("ada", "admin"),
    }


def _propose(client, headers, **overrides) -> dict:
    response = client.post("/v1/data_sources", json={**PROPOSAL, **overrides}, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


def _check(client, people, obj, act="train", roles=("ml-engineer",)) -> dict:
    return client.post(
        "/v1/policies/check",
        json={"sub": "user:bob", "obj": obj, "act": act, "roles": list(roles)},
        headers=people["ada"],
    ).json()


def _class_links(settings) -> list[tuple[str, ...]]:
    engine = make_engine(settings.database_url)
    with Session(engine) as session:
        page = store.list_rules(session, ptype="g2")
    engine.dispose()
    return [item.rule.values for item in page.items]


class TestPropose:
    def test_a_data_owner_proposes(self, client, people):
        source = _propose(client, people["dora"])
        assert source["status"] == "proposed"
        assert source["proposed_by"] == "dora"
        assert source["id"].startswith("ds-")

    @pytest.mark.parametrize(
        "overrides, param",
        [
            ({"legal_basis": None}, "legal_basis"),
            (
                {"contains_personal_data": False, "legal_basis": None, "pii_action": "allow"},
                "pii_action",
            ),
            ({"classification": "secret"}, "classification"),
            ({"allowed_purposes": []}, "allowed_purposes"),
            ({"allowed_purposes": ["Bad Purpose!"]}, "allowed_purposes"),
            ({"retention_days": 0}, "retention_days"),
            ({"surprise": 1}, "surprise"),
        ],
    )
    def test_bad_proposals_get_400(self, client, people, overrides, param):
        response = client.post(
            "/v1/data_sources", json={**PROPOSAL, **overrides}, headers=people["dora"]
        )
        assert response.status_code == 400, response.text
        assert response.json()["error"]["code"] == "invalid_request"

    def test_names_are_unique_per_tenant(self, client, people):
        _propose(client, people["dora"])
        again = client.post("/v1/data_sources", json=PROPOSAL, headers=people["dora"])
        assert again.status_code == 409
        assert again.json()["error"]["code"] == "data_source_exists"

    def test_engineers_cannot_propose(self, client, people):
        response = client.post("/v1/data_sources", json=PROPOSAL, headers=people["bob"])
        assert response.status_code == 403


class TestApproval:
    def test_four_eyes_the_proposer_cannot_approve(self, client, token):
        both = token("olga", "data-owner", "compliance-officer")
        source = _propose(client, both)
        response = client.post(f"/v1/data_sources/{source['id']}/approve", headers=both)
        assert response.status_code == 409
        assert response.json()["error"]["code"] == "four_eyes_violation"

    def test_approval_classifies_the_source_in_the_policy(self, client, people):
        source = _propose(client, people["dora"], classification="restricted")
        obj = f"ds:{source['id']}"
        grant = {"ptype": "p", "values": ["user:bob", "default", obj, "train", "allow"]}
        assert (
            client.post(
                "/v1/policies/rules", json={"rules": [grant]}, headers=people["ada"]
            ).status_code
            == 201
        )
        assert _check(client, people, obj)["decision"] == "allow"

        approved = client.post(f"/v1/data_sources/{source['id']}/approve", headers=people["carol"])
        assert approved.status_code == 200, approved.text
        body = approved.json()
        assert body["status"] == "approved" and body["approved_by"] == "carol"
        # Now under class:restricted, where the seed denies ml-engineers training.
        after = _check(client, people, obj)
        assert after["decision"] == "deny"
        assert after["rule"] == ["role:ml-engineer", "*", "class:restricted", "train", "deny"]
        assert after["policy_version"] == body["approval_policy_version"]

    def test_approval_and_revocation_are_audited_with_policy_versions(
        self, client, people, gateway_settings
    ):
        source = _propose(client, people["dora"])
        approved = client.post(
            f"/v1/data_sources/{source['id']}/approve", headers=people["carol"]
        ).json()
        assert _class_links(gateway_settings) == [(f"ds:{source['id']}", "class:confidential")]
        revoked = client.post(
            f"/v1/data_sources/{source['id']}/revoke",
            json={"reason": "consent withdrawn"},
            headers=people["cora"],
        )
        assert revoked.status_code == 200 and revoked.json()["status"] == "revoked"
        events = client.get(
            "/v1/audit/events", params={"resource": f"ds:{source['id']}"}, headers=people["carol"]
        ).json()["data"]
        assert [e["action"] for e in events] == [
            "data_source.proposed",
            "data_source.approved",
            "data_source.revoked",
        ]
        assert events[1]["details"]["new_policy_version"] == approved["approval_policy_version"]
        assert (
            events[2]["details"]["reason_sha256"]
            == hashlib.sha256(b"consent withdrawn").hexdigest()
        )
        assert "consent withdrawn" not in str(events)
        assert _class_links(gateway_settings) == []

    def test_approve_twice_is_409(self, client, people):
        source = _propose(client, people["dora"])
        client.post(f"/v1/data_sources/{source['id']}/approve", headers=people["carol"])
        again = client.post(f"/v1/data_sources/{source['id']}/approve", headers=people["cora"])
        assert again.status_code == 409
        assert again.json()["error"]["code"] == "not_proposed"


class TestVisibility:
    def test_listing_shows_only_sources_the_caller_holds_a_grant_on(self, client, people):
        first = _propose(client, people["dora"])
        _propose(client, people["dora"], name="second")
        assert client.get("/v1/data_sources", headers=people["bob"]).json()["data"] == []
        grant = {
            "ptype": "p",
            "values": ["user:bob", "default", f"ds:{first['id']}", "read", "allow"],
        }
        client.post("/v1/policies/rules", json={"rules": [grant]}, headers=people["ada"])
        listed = client.get("/v1/data_sources", headers=people["bob"]).json()["data"]
        assert [s["id"] for s in listed] == [first["id"]]
        assert len(client.get("/v1/data_sources", headers=people["carol"]).json()["data"]) == 2

    def test_another_tenants_source_is_404(self, client, people, token):
        source = _propose(client, people["dora"])
        outsider = token("otto", "compliance-officer", tenant="acme")
        response = client.get(f"/v1/data_sources/{source['id']}", headers=outsider)
        assert response.status_code == 404
        assert (
            client.post(f"/v1/data_sources/{source['id']}/approve", headers=outsider).status_code
            == 404
        )

    def test_malformed_ids_are_refused_before_the_database(self, client, people):
        response = client.get("/v1/data_sources/x'%20OR%201=1", headers=people["carol"])
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "invalid_path_parameter"


class TestGates:
    def _source(self, **fields) -> DataSource:
        defaults = dict(
            id="ds-0000000000000001",
            tenant="default",
            name="n",
            classification="internal",
            owner="dora",
            retention_days=30,
            pii_action="block",
            status="approved",
            proposed_by="dora",
            proposed_at="2026-11-28T00:00:00.000000Z",
            allowed_purposes=["claims-triage"],
        )
        return DataSource(**{**defaults, **fields})

    @pytest.mark.parametrize("status", ["proposed", "revoked"])
    def test_only_approved_sources_are_usable(self, status):
        with pytest.raises(GatewayError) as refused:
            service.require_usable(self._source(status=status))
        assert refused.value.status_code == 409
        assert refused.value.code == "data_source_not_approved"
        service.require_usable(self._source())


class TestPathValues:
    @pytest.mark.parametrize("value", ["*", "a b", "x)||(y", "a" * 129])
    def test_a_path_value_never_widens_the_object(self, client, people, value):
        response = client.post(f"/v1/data_sources/{value}/approve", headers=people["carol"])
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "invalid_path_parameter"
