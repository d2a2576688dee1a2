"""Sending data out is its own policy action (issue 18 §1): `export` on the data source and
on `provider:<name>`, a classification that forbids any export, and personal data that
leaves only on a matching transfer record. Every decision is recorded with its policy
version; the dry run answers it over HTTP, the federated executor asks the same service."""

from __future__ import annotations

import pytest
from sqlmodel import Session

from gateway.data_sources.models import DataSource
from gateway.errors import GatewayError
from gateway.providers import service
from gateway.providers.models import Provider
from gateway.security import Principal

SCC = {"region": "eu-west-1", "legal_basis": "standard_contractual_clauses"}


def _check(client, headers, source_id, provider="acme"):
    return client.post(
        f"/v1/providers/{provider}/export_check", json={"data_source": source_id}, headers=headers
    )


def _checked(client, people, source_id, provider="acme") -> dict:
    response = _check(client, people["bob"], source_id, provider)
    assert response.status_code == 200, response.text
    return response.json()


def _head(client, people) -> str:
    versions = client.get("/v1/policies/versions", params={"limit": 1}, headers=people["ada"])
    return versions.json()["data"][0]["hash"]


def _decisions(client, people, source_id) -> list[dict]:
    return client.get(
        "/v1/audit/events",
        params={"action": "provider.export_checked", "resource": f"ds:{source_id}"},
        headers=people["carol"],
    ).json()["data"]


@pytest.fixture
def allow_bob(grant):
    """bob may export the source and may send to acme."""

    def allow(source_id: str, provider: str = "acme") -> None:
        grant("bob", f"ds:{source_id}", "export")
        grant("bob", f"provider:{provider}", "export")

    return allow


class TestPolicy:
    def test_nobody_exports_by_default_and_the_denial_is_recorded(
        self, client, people, acme, approved_source
    ):
        source = approved_source(transfers=[SCC])
        body = _checked(client, people, source["id"])
        assert body["object"] == "provider.export_check"
        assert body["allowed"] is False
        assert [(r["gate"], r["code"], r["status"]) for r in body["refusals"]] == [
            ("policy", "permission_denied", 403),
            ("policy", "permission_denied", 403),
        ]
        assert [r["details"]["object"] for r in body["refusals"]] == [
            f"ds:{source['id']}",
            "provider:acme",
        ]
        assert body["policy_version"] == _head(client, people)
        [event] = _decisions(client, people, source["id"])
        assert event["actor"] == "bob" and event["decision"] == "deny"
        assert event["policy_version"] == body["policy_version"]
        assert event["details"]["to"] == "provider:acme"
        assert event["details"]["dry_run"] is True
        assert event["details"]["refusals"] == [
            {"gate": "policy", "code": "permission_denied"},
            {"gate": "policy", "code": "permission_denied"},
        ]

    def test_allowed_with_both_grants_and_recorded_with_its_policy_version(
        self, client, people, acme, approved_source, allow_bob
    ):
        source = approved_source(transfers=[SCC])
        allow_bob(source["id"])
        body = _checked(client, people, source["id"])
        assert body["allowed"] is True and body["refusals"] == []
        assert body["transfer"] == {**SCC, "provider": None}
        policy = [d for d in body["decisions"] if d["kind"] == "policy"]
        assert [(d["object"], d["action"]) for d in policy] == [
            (f"ds:{source['id']}", "export"),
            ("provider:acme", "export"),
        ]
        assert policy[1]["rule"] == ["user:bob", "default", "provider:acme", "export", "allow"]
        gates = [d["gate"] for d in body["decisions"] if d["kind"] == "gate"]
        assert gates == ["provider_active", "data_source_approved", "classification", "transfer"]
        head = _head(client, people)
        assert body["policy_version"] == head
        assert {d["policy_version"] for d in policy} == {head}
        [event] = _decisions(client, people, source["id"])
        assert event["decision"] == "allow" and event["policy_version"] == head
        assert event["details"]["decided_by"] == [d["rule"] for d in policy]
        assert event["details"]["transfer"] == {**SCC, "provider": None}

    def test_one_grant_is_not_enough(self, client, people, acme, approved_source, grant):
        source = approved_source(transfers=[SCC])
        grant("bob", f"ds:{source['id']}", "export")
        body = _checked(client, people, source["id"])
        assert body["allowed"] is False
        assert [r["details"]["object"] for r in body["refusals"]] == ["provider:acme"]
        other = approved_source(transfers=[SCC])
        grant("bob", "provider:acme", "export")
        refused = _checked(client, people, other["id"])
        assert [r["details"]["object"] for r in refused["refusals"]] == [f"ds:{other['id']}"]

    def test_a_class_rule_denies_whatever_grants_allow(
        self, client, people, acme, approved_source, allow_bob, grant
    ):
        source = approved_source(classification="confidential", transfers=[SCC])
        allow_bob(source["id"])
        grant("bob", "class:confidential", "export", effect="deny")
        body = _checked(client, people, source["id"])
        assert body["allowed"] is False
        [refusal] = body["refusals"]
        assert refusal["gate"] == "policy"
        assert refusal["details"]["object"] == f"ds:{source['id']}"

    def test_a_policy_refusal_hides_the_sources_gates(self, client, people, acme, approved_source):
        source = approved_source(classification="restricted")
        body = _checked(client, people, source["id"])
        assert {r["gate"] for r in body["refusals"]} == {"policy"}
        assert [d for d in body["decisions"] if d["kind"] == "gate"] == []


class TestGates:
    def test_restricted_data_never_leaves(self, client, people, acme, approved_source, allow_bob):
        source = approved_source(classification="restricted", transfers=[SCC])
        allow_bob(source["id"])
        body = _checked(client, people, source["id"])
        assert body["allowed"] is False
        [refusal] = body["refusals"]
        assert (refusal["gate"], refusal["code"], refusal["status"]) == (
            "classification",
            "export_forbidden_by_classification",
            403,
        )
        assert refusal["details"] == {"data_source": source["id"], "classification": "restricted"}
        [event] = _decisions(client, people, source["id"])
        assert event["decision"] == "deny"
        assert event["details"]["refusals"] == [
            {"gate": "classification", "code": "export_forbidden_by_classification"}
        ]

    @pytest.mark.parametrize(
        "transfers",
        [
            None,
            [],
            [{"region": "us-east-1", "legal_basis": "standard_contractual_clauses"}],
            [{**SCC, "provider": "beta"}],
        ],
        ids=["no-record", "empty", "other-region", "other-provider"],
    )
    def test_personal_data_needs_a_matching_transfer_record(
        self, client, people, acme, approved_source, allow_bob, transfers
    ):
        source = approved_source(transfers=transfers)
        allow_bob(source["id"])
        body = _checked(client, people, source["id"])
        assert body["allowed"] is False and body["transfer"] is None
        [refusal] = body["refusals"]
        assert (refusal["gate"], refusal["code"]) == ("transfer", "transfer_not_recorded")
        assert refusal["details"] == {"data_source": source["id"], "provider": "acme"}

    @pytest.mark.parametrize(
        "transfer",
        [
            {**SCC, "provider": "acme"},
            {"region": "eu-west-1", "legal_basis": "processor_agreement"},
        ],
    )
    def test_a_matching_record_allows_it(
        self, client, people, acme, approved_source, allow_bob, transfer
    ):
        unrelated = {"region": "us-east-1", "legal_basis": "adequacy_decision"}
        source = approved_source(transfers=[unrelated, transfer])
        allow_bob(source["id"])
        body = _checked(client, people, source["id"])
        assert body["allowed"] is True
        assert body["transfer"] == {"provider": None, **transfer}
        [gate] = [d for d in body["decisions"] if d.get("gate") == "transfer"]
        assert gate["region"] == "eu-west-1" and gate["legal_basis"] == transfer["legal_basis"]

    def test_data_without_personal_data_needs_no_transfer_record(
        self, client, people, acme, approved_source, allow_bob
    ):
        source = approved_source(contains_personal_data=False, legal_basis=None)
        allow_bob(source["id"])
        body = _checked(client, people, source["id"])
        assert body["allowed"] is True and body["transfer"] is None
        [gate] = [d for d in body["decisions"] if d.get("gate") == "transfer"]
        assert gate["personal_data"] is False

    def test_only_to_an_active_provider_from_an_approved_source(
        self, client, people, root, acme, approved_source, allow_bob, grant
    ):
        source = approved_source(transfers=[SCC])
        allow_bob(source["id"])
        assert client.delete("/v1/providers/acme", headers=root).status_code == 200
        body = _checked(client, people, source["id"])
        assert [(r["gate"], r["code"], r["status"]) for r in body["refusals"]] == [
            ("provider_active", "provider_retired", 409)
        ]
        proposed = client.post(
            "/v1/data_sources",
            json={
                "name": "not yet approved",
                "classification": "internal",
                "allowed_purposes": ["support-assistant"],
                "owner": "dora",
                "retention_days": 30,
            },
            headers=people["dora"],
        ).json()
        grant("bob", f"ds:{proposed['id']}", "export")
        refused = _checked(client, people, proposed["id"])
        assert ("data_source_approved", "data_source_not_approved") in {
            (r["gate"], r["code"]) for r in refused["refusals"]
        }

    def test_unknown_sources_and_providers(self, client, people, acme, approved_source, token):
        source = approved_source(transfers=[SCC])
        other_tenant = token("olga", "ml-engineer", tenant="other")
        assert _check(client, other_tenant, source["id"]).status_code == 404
        missing = _check(client, people["bob"], "ds-0123456789abcdef")
        assert missing.json()["error"]["code"] == "data_source_not_found"
        assert _check(client, people["bob"], source["id"], "nobody").status_code == 404
        bad = _check(client, people["bob"], "not-an-id")
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "data_source"
        assert _check(client, people["dora"], source["id"]).status_code == 403


class TestTheServiceTheExecutorCalls:
    def test_check_export_decides_and_records_in_the_callers_transaction(
        self, client, people, acme, approved_source, allow_bob
    ):
        source = approved_source(classification="restricted", transfers=[SCC])
        allow_bob(source["id"])
        state = client.app.state.gateway
        bob = Principal(sub="bob", tenant="default", roles=("ml-engineer",))
        with Session(state.engine) as session:
            decision = service.check_export(
                session,
                state=state,
                principal=bob,
                data_source=session.get(DataSource, source["id"]),
                provider=session.get(Provider, "acme"),
            )
            session.commit()
        assert decision.allowed is False
        error = decision.error()
        assert error is not None and error.code == "export_forbidden_by_classification"
        assert error.status_code == 403
        state.flush_audit_queue()
        [event] = _decisions(client, people, source["id"])
        assert event["details"]["via"] == "executor:federated"
        assert event["details"]["dry_run"] is False
        assert event["policy_version"] == decision.policy_version == _head(client, people)

    def test_an_uncommitted_decision_is_not_recorded(self, client, people, acme, approved_source):
        source = approved_source(transfers=[SCC])
        state = client.app.state.gateway
        bob = Principal(sub="bob", tenant="default", roles=("ml-engineer",))
        with Session(state.engine) as session:
            service.check_export(
                session,
                state=state,
                principal=bob,
                data_source=session.get(DataSource, source["id"]),
                provider=session.get(Provider, "acme"),
            )
            session.rollback()
        state.flush_audit_queue()
        assert _decisions(client, people, source["id"]) == []

    def test_another_tenants_principal_is_refused_before_any_decision(
        self, client, people, acme, approved_source
    ):
        source = approved_source(transfers=[SCC])
        state = client.app.state.gateway
        olga = Principal(sub="olga", tenant="other", roles=("ml-engineer",))
        with Session(state.engine) as session:
            with pytest.raises(GatewayError) as refused:
                service.check_export(
                    session,
                    state=state,
                    principal=olga,
                    data_source=session.get(DataSource, source["id"]),
                    provider=session.get(Provider, "acme"),
                )
            session.commit()
        assert refused.value.code == "data_source_not_found"
        state.flush_audit_queue()
        assert _decisions(client, people, source["id"]) == []
