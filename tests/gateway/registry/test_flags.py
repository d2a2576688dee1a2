from __future__ import annotations

import hashlib

from sqlmodel import Session

from gateway.db import make_engine
from gateway.registry.service import flag_models
from tests.gateway.conftest import good_file, upload
from tests.gateway.registry import factories
from tests.gateway.registry.conftest import EMAIL, ask, promote, with_pii


def _flagged(client, headers):
    response = client.get("/v1/models", params={"flagged": "true"}, headers=headers)
    assert response.status_code == 200, response.text
    return {item["id"]: item for item in response.json()["data"]}


class TestFlagOnRevocation:
    def test_revoking_a_source_flags_its_models_and_their_descendants(
        self, client, people, trained, approved_source, gateway_settings
    ):
        elsewhere = approved_source()
        other_file = upload(
            client, people["dora"], data_source=elsewhere["id"], content=good_file(3)
        ).json()
        # Trained on other data, but on top of the affected adapter.
        child = factories.fine_tuned_model(
            gateway_settings,
            files=[other_file],
            parent=trained["model_id"],
            suffix="child",
        )
        unrelated = factories.fine_tuned_model(
            gateway_settings, files=[other_file], suffix="unrelated"
        )
        assert _flagged(client, people["bob"]) == {}
        source_id = trained["source"]["id"]
        revoked = client.post(
            f"/v1/data_sources/{source_id}/revoke",
            json={"reason": "consent withdrawn"},
            headers=people["carol"],
        )
        assert revoked.status_code == 200, revoked.text
        flagged = _flagged(client, people["bob"])
        assert set(flagged) == {trained["model_id"], child}
        assert unrelated not in flagged
        [flag] = flagged[trained["model_id"]]["flags"]
        assert flag["reason"] == "data_source_revoked" and flag["ref"] == source_id
        assert flagged[child]["flags"][0]["via"] == f"parent:{trained['model_id']}"
        events = client.get(
            "/v1/audit/events", params={"action": "model.flagged"}, headers=people["carol"]
        ).json()["data"]
        assert {event["resource"] for event in events} == {
            f"model:{trained['model_id']}",
            f"model:{child}",
        }
        assert all(event["actor"] == "carol" and event["policy_version"] for event in events)

    def test_a_flagged_model_is_not_promoted_even_with_an_override(self, client, people, trained):
        _revoke(client, people, trained)
        refused = ask(
            client, people["eve"], trained["model_id"], override_reason="reviewed: retrain later"
        )
        assert refused.status_code == 409
        assert refused.json()["error"]["code"] == "model_flagged"
        compat = client.post(f"/v1/models/{trained['model_id']}/promote", headers=people["eve"])
        assert compat.status_code == 409 and compat.json()["error"]["code"] == "model_flagged"


def _flag_erasure(gateway_settings, file_id, ref):
    engine = make_engine(gateway_settings.database_url)
    try:
        with Session(engine) as session:
            flag_models(
                session,
                tenant="default",
                file_ids=[file_id],
                reason="erasure_requested",
                ref=ref,
            )
            session.commit()
    finally:
        engine.dispose()


def _revoke(client, people, trained):
    revoked = client.post(
        f"/v1/data_sources/{trained['source']['id']}/revoke",
        json={"reason": "consent withdrawn"},
        headers=people["carol"],
    )
    assert revoked.status_code == 200, revoked.text


def _clear(client, headers, model_id, **body):
    return client.post(
        f"/v1/models/{model_id}/clear_flag",
        json={"reason": "reviewed: the revoked rows were never trained on", **body},
        headers=headers,
    )


class TestClearFlag:
    def test_a_compliance_officer_clears_a_flag_with_a_reason_and_it_is_audited(
        self, client, people, trained
    ):
        _revoke(client, people, trained)
        model_id = trained["model_id"]
        response = _clear(client, people["cora"], model_id)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["flags"] == []
        [cleared] = body["cleared_flags"]
        assert cleared["reason"] == "data_source_revoked"
        assert cleared["ref"] == trained["source"]["id"] and cleared["cleared_by"] == "cora"
        reason = "reviewed: the revoked rows were never trained on"
        assert cleared["clear_reason"] == reason
        assert cleared["clear_reason_sha256"] == hashlib.sha256(reason.encode()).hexdigest()
        assert _flagged(client, people["bob"]) == {}
        [event] = client.get(
            "/v1/audit/events", params={"action": "model.flag_cleared"}, headers=people["carol"]
        ).json()["data"]
        assert event["actor"] == "cora" and event["resource"] == f"model:{model_id}"
        assert event["details"]["clear_reason_sha256"] == cleared["clear_reason_sha256"]
        assert event["policy_version"] and "never trained" not in str(event)
        # cleared, it can be asked for and approved again
        assert promote(client, people, model_id)["status"] == "approved"

    def test_only_the_flags_of_one_ref_when_named(self, client, people, trained, gateway_settings):
        _revoke(client, people, trained)
        _flag_erasure(gateway_settings, trained["files"][0]["id"], "er-0000000000000001")
        model_id = trained["model_id"]
        response = _clear(client, people["carol"], model_id, ref=trained["source"]["id"])
        assert response.status_code == 200, response.text
        assert [flag["ref"] for flag in response.json()["flags"]] == ["er-0000000000000001"]
        still = ask(client, people["eve"], model_id)
        assert still.status_code == 409 and still.json()["error"]["code"] == "model_flagged"

    def test_a_cleared_flag_is_not_raised_again_for_the_same_ref(
        self, client, people, trained, gateway_settings
    ):
        file_id = trained["files"][0]["id"]
        _flag_erasure(gateway_settings, file_id, "er-0000000000000000")
        assert _clear(client, people["carol"], trained["model_id"]).status_code == 200
        _flag_erasure(gateway_settings, file_id, "er-0000000000000000")
        row = factories.model_row(gateway_settings, trained["model_id"])
        assert row.flags == [] and len(row.cleared_flags) == 1

    def test_nothing_to_clear_is_409(self, client, people, trained):
        response = _clear(client, people["carol"], trained["model_id"])
        assert response.status_code == 409
        assert response.json()["error"]["code"] == "not_flagged"

    def test_engineers_cannot_clear_and_a_reason_is_required(self, client, people, trained):
        _revoke(client, people, trained)
        assert _clear(client, people["eve"], trained["model_id"]).status_code == 403
        assert _clear(client, people["bob"], trained["model_id"]).status_code == 403
        missing = client.post(
            f"/v1/models/{trained['model_id']}/clear_flag", json={}, headers=people["carol"]
        )
        assert missing.status_code == 400


class TestFlagOnErasure:
    def test_an_erasure_request_flags_the_models_trained_on_the_files_it_names(
        self, client, people, trained, approved_source, gateway_settings
    ):
        allowing = approved_source(pii_action="allow")
        mention = upload(
            client, people["dora"], data_source=allowing["id"], content=with_pii()
        ).json()
        clean = upload(
            client, people["dora"], data_source=allowing["id"], content=good_file(5, start=50)
        ).json()
        affected = factories.fine_tuned_model(
            gateway_settings, files=[mention, clean], suffix="mention"
        )
        response = client.post(
            "/v1/erasure_requests", json={"subject": EMAIL}, headers=people["carol"]
        )
        assert response.status_code == 201, response.text
        body = response.json()
        assert [match["file_id"] for match in body["findings"]["files"]] == [mention["id"]]
        # The redacting source kept no copy of the address, so its model is not named.
        assert body["findings"]["models"] == [affected]
        flagged = _flagged(client, people["bob"])
        assert set(flagged) == {affected}
        [flag] = flagged[affected]["flags"]
        assert flag == {
            **flag,
            "reason": "erasure_requested",
            "ref": body["id"],
            "via": f"file:{mention['id']}",
        }
        assert EMAIL not in str(flagged)


class TestFlagModels:
    def test_flagging_twice_for_the_same_reason_adds_one_flag(
        self, client, trained, gateway_settings
    ):
        engine = make_engine(gateway_settings.database_url)
        try:
            for _ in range(2):
                with Session(engine) as session:
                    ids = flag_models(
                        session,
                        tenant="default",
                        file_ids=[trained["files"][0]["id"]],
                        reason="erasure_requested",
                        ref="er-0000000000000000",
                    )
                    session.commit()
                assert ids == [trained["model_id"]]
        finally:
            engine.dispose()
        row = factories.model_row(gateway_settings, trained["model_id"])
        assert len(row.flags) == 1 and row.flags[0]["via"] == f"file:{trained['files'][0]['id']}"

    def test_another_tenants_models_are_never_flagged(self, client, trained, gateway_settings):
        engine = make_engine(gateway_settings.database_url)
        try:
            with Session(engine) as session:
                ids = flag_models(
                    session,
                    tenant="acme",
                    data_source_id=trained["source"]["id"],
                    reason="data_source_revoked",
                    ref="x",
                )
                session.commit()
        finally:
            engine.dispose()
        assert ids == []
        assert factories.model_row(gateway_settings, trained["model_id"]).flags == []
