"""Promotion as a request, then an approval: an engineer asks, a compliance officer who
neither asked nor trained the model approves (and the model goes to production in the same
transaction) or rejects."""

from __future__ import annotations

import hashlib

import pytest

from tests.gateway.registry import factories
from tests.gateway.registry.conftest import ask, promote


def _events(client, headers, action):
    response = client.get("/v1/audit/events", params={"action": action}, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()["data"]


def _decide(client, headers, request_id, act="approve", **body):
    return client.post(
        f"/v1/promotion_requests/{request_id}/{act}", json=body or None, headers=headers
    )


def _model(client, people, model_id):
    return client.get(f"/v1/models/{model_id}", headers=people["bob"]).json()


def _revoke(client, people, trained):
    revoked = client.post(
        f"/v1/data_sources/{trained['source']['id']}/revoke",
        json={"reason": "consent withdrawn"},
        headers=people["carol"],
    )
    assert revoked.status_code == 200, revoked.text


class TestAsk:
    def test_an_engineer_asks_with_a_reason_and_sees_the_verdict(self, client, people, trained):
        reason = "beats the baselines; Jane Roe's team needs it"
        response = ask(client, people["bob"], trained["model_id"], reason=reason)
        assert response.status_code == 201, response.text
        body = response.json()
        assert body["object"] == "model.promotion_request" and body["id"].startswith("promreq-")
        assert body["status"] == "pending" and body["model_id"] == trained["model_id"]
        assert body["verdict"] == "passed" and body["override_reason"] is None
        assert (body["requested_by"], body["trained_by"]) == ("bob", "bob")
        assert body["reason"] == reason and body["request_policy_version"]
        assert body["decided_by"] is None
        assert _model(client, people, trained["model_id"])["status"] == "candidate"
        [event] = _events(client, people["carol"], "model.promotion_requested")
        assert event["actor"] == "bob" and event["resource"] == f"model:{trained['model_id']}"
        assert event["policy_version"] == body["request_policy_version"]
        assert event["details"]["reason_sha256"] == hashlib.sha256(reason.encode()).hexdigest()
        assert "Jane" not in str(event)

    def test_a_failed_verdict_needs_an_override_reason_and_shows_it(
        self, client, people, trained, gateway_settings
    ):
        failed = factories.fine_tuned_model(
            gateway_settings, files=trained["files"], verdict="failed", suffix="failed"
        )
        refused = ask(client, people["eve"], failed)
        assert refused.status_code == 409
        assert refused.json()["error"]["code"] == "evaluation_not_passed"
        asked = ask(client, people["eve"], failed, override_reason="the failing check is noisy")
        assert asked.status_code == 201, asked.text
        assert asked.json()["verdict"] == "failed"
        assert asked.json()["override_reason"] == "the failing check is noisy"

    def test_an_override_on_a_passed_verdict_is_not_kept(self, client, people, trained):
        asked = ask(client, people["eve"], trained["model_id"], override_reason="just in case")
        assert asked.status_code == 201 and asked.json()["override_reason"] is None

    @pytest.mark.parametrize(
        "body", [{}, {"reason": "x"}, {"reason": "fine", "extra": 1}, {"reason": "a\x00b"}]
    )
    def test_a_reason_is_required_and_bodies_are_strict(self, client, people, trained, body):
        response = client.post(
            f"/v1/models/{trained['model_id']}/promotion_requests", json=body, headers=people["eve"]
        )
        assert response.status_code == 400

    def test_one_pending_request_per_model(self, client, people, trained):
        first = ask(client, people["bob"], trained["model_id"]).json()
        again = ask(client, people["eve"], trained["model_id"])
        assert again.status_code == 409
        assert again.json()["error"]["code"] == "promotion_pending"
        assert again.json()["error"]["details"]["request_id"] == first["id"]

    def test_asking_needs_the_promote_grant(self, client, people, trained):
        for person in ("dora", "carol", "ada"):
            assert ask(client, people[person], trained["model_id"]).status_code == 403, person

    def test_a_flagged_model_is_refused(self, client, people, trained):
        _revoke(client, people, trained)
        refused = ask(client, people["eve"], trained["model_id"])
        assert refused.status_code == 409 and refused.json()["error"]["code"] == "model_flagged"


class TestApprove:
    def test_approval_promotes_with_both_people_and_policy_versions_in_the_trail(
        self, client, people, trained
    ):
        asked = ask(client, people["bob"], trained["model_id"]).json()
        response = _decide(client, people["carol"], asked["id"], reason="reviewed the report")
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["status"] == "approved" and body["decided_by"] == "carol"
        assert body["decision_policy_version"] and body["decision_reason"] == "reviewed the report"
        model = _model(client, people, trained["model_id"])
        assert model["status"] == "production" and model["promoted_by"] == "carol"
        [approved] = _events(client, people["carol"], "model.promotion_approved")
        [promoted] = _events(client, people["carol"], "model.promoted")
        for event in (approved, promoted):
            assert event["actor"] == "carol" and event["decision"] == "allow"
            assert event["policy_version"] == body["decision_policy_version"]
            assert event["details"]["requested_by"] == "bob"
            assert event["details"]["request_policy_version"] == asked["request_policy_version"]
        assert promoted["details"]["approved_by"] == "carol"
        assert promoted["details"]["overridden"] == []
        assert promoted["seq"] == approved["seq"] + 1  # one transaction, in order

    def test_the_requester_never_approves_their_own_request(self, client, people, trained, grant):
        grant("cora", "model:*", "promote")
        asked = ask(client, people["cora"], trained["model_id"]).json()
        for act in ("approve", "reject"):
            body = {"reason": "no thanks"} if act == "reject" else {}
            refused = _decide(client, people["cora"], asked["id"], act, **body)
            assert refused.status_code == 403, refused.text
            error = refused.json()["error"]
            assert error["code"] == "four_eyes_violation"
            assert error["details"]["decider_is"] == "requester"
        for act in ("approve", "reject"):
            [denial] = _events(client, people["carol"], f"model.promotion_{act}_refused")
            assert denial["decision"] == "deny" and denial["actor"] == "cora"
            assert denial["resource"] == f"model:{trained['model_id']}"
            assert denial["details"]["code"] == "four_eyes_violation"
        still = client.get(f"/v1/promotion_requests/{asked['id']}", headers=people["cora"])
        assert still.json()["status"] == "pending"
        assert _decide(client, people["carol"], asked["id"]).status_code == 200

    def test_whoever_trained_the_model_never_approves_it(
        self, client, people, trained, gateway_settings
    ):
        theirs = factories.fine_tuned_model(
            gateway_settings, files=trained["files"], requested_by="carol", suffix="carols"
        )
        asked = ask(client, people["eve"], theirs).json()
        assert asked["trained_by"] == "carol"
        refused = _decide(client, people["carol"], asked["id"])
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "four_eyes_violation"
        assert refused.json()["error"]["details"]["decider_is"] == "trainer"
        assert _model(client, people, theirs)["status"] == "candidate"
        assert _decide(client, people["cora"], asked["id"]).status_code == 200

    def test_only_a_compliance_officer_decides(self, client, people, trained):
        asked = ask(client, people["bob"], trained["model_id"]).json()
        for person in ("eve", "ada", "dora"):
            refused = _decide(client, people[person], asked["id"])
            assert refused.status_code == 403, person
            assert refused.json()["error"]["code"] == "permission_denied"

    def test_a_decided_request_is_409(self, client, people, trained):
        approved = promote(client, people, trained["model_id"], requester="bob")
        again = _decide(client, people["cora"], approved["id"])
        assert again.status_code == 409
        assert again.json()["error"]["code"] == "promotion_request_decided"
        assert again.json()["error"]["details"]["status"] == "approved"
        late = _decide(client, people["cora"], approved["id"], "reject", reason="too late")
        assert late.status_code == 409

    def test_approval_checks_the_model_again(self, client, people, trained):
        asked = ask(client, people["bob"], trained["model_id"]).json()
        _revoke(client, people, trained)
        refused = _decide(client, people["carol"], asked["id"])
        assert refused.status_code == 409 and refused.json()["error"]["code"] == "model_flagged"
        assert _model(client, people, trained["model_id"])["status"] == "candidate"
        cleared = client.post(
            f"/v1/models/{trained['model_id']}/clear_flag",
            json={"reason": "reviewed: the revoked rows were not trained on"},
            headers=people["cora"],
        )
        assert cleared.status_code == 200, cleared.text
        assert _decide(client, people["carol"], asked["id"]).status_code == 200


class TestReject:
    def test_a_rejection_keeps_the_candidate_and_a_new_request_may_follow(
        self, client, people, trained
    ):
        asked = ask(client, people["bob"], trained["model_id"]).json()
        missing = _decide(client, people["carol"], asked["id"], "reject")
        assert missing.status_code == 400
        response = _decide(client, people["carol"], asked["id"], "reject", reason="not yet")
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "rejected"
        assert response.json()["decision_reason"] == "not yet"
        assert _model(client, people, trained["model_id"])["status"] == "candidate"
        [event] = _events(client, people["carol"], "model.promotion_rejected")
        assert event["actor"] == "carol" and "not yet" not in str(event)
        assert ask(client, people["bob"], trained["model_id"]).status_code == 201

    def test_retiring_the_model_withdraws_a_pending_request(self, client, people, trained):
        asked = ask(client, people["bob"], trained["model_id"]).json()
        client.post(f"/v1/models/{trained['model_id']}/retire", headers=people["carol"])
        row = client.get(f"/v1/promotion_requests/{asked['id']}", headers=people["bob"]).json()
        assert row["status"] == "withdrawn" and row["decided_by"] == "carol"


class TestListAndGet:
    def test_pages_newest_first_with_filters(self, client, people, trained, gateway_settings):
        other = factories.fine_tuned_model(gateway_settings, files=trained["files"], suffix="b")
        first = ask(client, people["bob"], trained["model_id"]).json()
        second = ask(client, people["bob"], other).json()
        seen, after = [], None
        while True:
            params = {"limit": 1, **({"after": after} if after else {})}
            page = client.get("/v1/promotion_requests", params=params, headers=people["carol"])
            assert page.status_code == 200, page.text
            body = page.json()
            assert body["object"] == "list"
            seen += [item["id"] for item in body["data"]]
            if not body["has_more"]:
                break
            after = body["last_id"]
        assert seen == [second["id"], first["id"]]
        _decide(client, people["carol"], first["id"])
        pending = client.get(
            "/v1/promotion_requests", params={"status": "pending"}, headers=people["carol"]
        ).json()["data"]
        assert [item["id"] for item in pending] == [second["id"]]
        of_model = client.get(
            "/v1/promotion_requests", params={"model_id": other}, headers=people["carol"]
        ).json()["data"]
        assert [item["id"] for item in of_model] == [second["id"]]

    def test_get_and_its_refusals(self, client, people, trained, token):
        asked = ask(client, people["bob"], trained["model_id"]).json()
        got = client.get(f"/v1/promotion_requests/{asked['id']}", headers=people["carol"])
        assert got.status_code == 200 and got.json() == asked
        outsider = token("olga", "compliance-officer", tenant="acme")
        for path in (f"/v1/promotion_requests/{asked['id']}", "/v1/promotion_requests/promreq-x"):
            response = client.get(path, headers=outsider)
            assert response.status_code == 404, path
            assert response.json()["error"]["code"] == "promotion_request_not_found"
        assert _decide(client, outsider, asked["id"]).status_code == 404
        listed = client.get("/v1/promotion_requests", headers=outsider).json()["data"]
        assert listed == []
