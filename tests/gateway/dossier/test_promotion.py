"""The dossier says who asked for the promotion and who approved it, with the policy
version that allowed each step, every request made, and the flags cleared on review."""

from __future__ import annotations

from tests.gateway.registry.conftest import ask, promote


def _dossier(client, headers, model_id, **params):
    response = client.get(f"/v1/models/{model_id}/dossier", params=params, headers=headers)
    assert response.status_code == 200, response.text
    return response


class TestPromotionInTheDossier:
    def test_both_people_and_both_policy_versions(self, client, people, trained):
        model_id = trained["model_id"]
        rejected = ask(client, people["bob"], model_id, reason="first try").json()
        client.post(
            f"/v1/promotion_requests/{rejected['id']}/reject",
            json={"reason": "wait for the review"},
            headers=people["cora"],
        )
        approved = promote(client, people, model_id, requester="eve", approver="carol")
        promotion = _dossier(client, people["carol"], model_id).json()["approvals"]["promotion"]
        assert promotion["request_id"] == approved["id"]
        assert (promotion["requested_by"], promotion["promoted_by"]) == ("eve", "carol")
        assert promotion["request_policy_version"] == approved["request_policy_version"]
        assert promotion["approval_policy_version"] == approved["decision_policy_version"]
        assert promotion["request_policy_version"] and promotion["approval_policy_version"]
        requests = _dossier(client, people["carol"], model_id).json()["approvals"][
            "promotion_requests"
        ]
        assert [(r["id"], r["status"], r["decided_by"]) for r in requests] == [
            (rejected["id"], "rejected", "cora"),
            (approved["id"], "approved", "carol"),
        ]
        text = _dossier(client, people["carol"], model_id, format="markdown").text
        assert "Asked for by eve" in text and "on the approval of carol" in text
        assert approved["decision_policy_version"] in text and rejected["id"] in text

    def test_the_promotion_events_are_in_the_trail(self, client, people, trained):
        promote(client, people, trained["model_id"])
        audit = _dossier(client, people["carol"], trained["model_id"]).json()["audit"]
        actions = {entry["event"]["action"] for entry in audit["events"]}
        assert {
            "model.promotion_requested",
            "model.promotion_approved",
            "model.promoted",
        } <= actions

    def test_cleared_flags_stay_on_record(self, client, people, trained):
        client.post(
            f"/v1/data_sources/{trained['source']['id']}/revoke",
            json={"reason": "consent withdrawn"},
            headers=people["carol"],
        )
        cleared = client.post(
            f"/v1/models/{trained['model_id']}/clear_flag",
            json={"reason": "reviewed: nothing revoked was trained on"},
            headers=people["cora"],
        )
        assert cleared.status_code == 200, cleared.text
        body = _dossier(client, people["carol"], trained["model_id"]).json()
        assert body["flags"] == []
        [flag] = body["cleared_flags"]
        assert flag["cleared_by"] == "cora" and flag["reason"] == "data_source_revoked"
        text = _dossier(client, people["carol"], trained["model_id"], format="markdown").text
        assert "Cleared after review" in text and "nothing revoked was trained on" in text
