from __future__ import annotations

import json

from audit.offline import verify_proof
from tests.gateway.registry import factories
from tests.gateway.registry.conftest import promote


def _dossier(client, headers, model_id, **params):
    return client.get(f"/v1/models/{model_id}/dossier", params=params, headers=headers)


class TestDossier:
    def test_it_names_the_data_versions_with_their_hashes_and_datasheets(
        self, client, people, trained
    ):
        response = _dossier(client, people["carol"], trained["model_id"])
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["format"] == "tunegate-dossier/v1" and body["model_id"] == trained["model_id"]
        redacted, clean = trained["files"]
        files = {f["file_id"]: f for f in body["data"]["files"]}
        assert files[redacted["id"]]["sha256"] == redacted["sha256"]
        assert files[redacted["id"]]["content_sha256"] == redacted["content_sha256"]
        assert files[clean["id"]]["content_sha256"] == clean["content_sha256"]
        assert files[redacted["id"]]["datasheet"] == redacted["report"]
        [source] = body["data"]["data_sources"]
        assert source["id"] == trained["source"]["id"]
        assert source["allowed_purposes"] == ["support-assistant"]
        [purpose] = body["intended_purpose"]["data_sources"]
        assert purpose["purpose_allowed"] is True
        assert body["intended_purpose"]["job_purpose"] == "support-assistant"
        steps = {s["step"]: s for s in body["preparation"][0]["steps"]}
        assert set(steps) == {"validation", "pii", "redaction"}
        assert steps["redaction"]["input_sha256"] == redacted["sha256"]
        assert steps["redaction"]["output_sha256"] == redacted["content_sha256"]
        assert steps["pii"]["action"] == "redact"
        [approval] = body["approvals"]["data_sources"]
        assert (approval["proposed_by"], approval["approved_by"]) == ("dora", "carol")
        assert body["evaluation"]["verdict"] == "passed"
        assert body["training"]["seed"] == 42 and body["training"]["lora"]["r"] == 8
        assert body["lineage"]["base_model"]["manifest_sha256"] == factories.BASE_MANIFEST

    def test_every_event_carries_a_valid_inclusion_proof(self, client, people, trained):
        promote(client, people, trained["model_id"])
        audit = _dossier(client, people["carol"], trained["model_id"]).json()["audit"]
        actions = [entry["event"]["action"] for entry in audit["events"]]
        assert {
            "data_source.proposed",
            "data_source.approved",
            "file.uploaded",
            "model.promoted",
        } <= set(actions)
        assert actions.count("file.uploaded") == 2
        published = client.get("/v1/audit/public-key", headers=people["carol"]).json()
        assert published["key_id"] == audit["public_key"]["key_id"]
        for entry in audit["events"]:
            verdict = verify_proof(entry["proof"], audit["checkpoint"], published["public_key_pem"])
            assert verdict.ok, verdict.message
            assert json.loads(entry["proof"]["body"])["seq"] == entry["event"]["seq"]
        [promotion] = [e for e in audit["events"] if e["event"]["action"] == "model.promoted"]
        tampered = {
            **promotion["proof"],
            "body": promotion["proof"]["body"].replace('"carol"', '"mallory"'),
        }
        assert not verify_proof(tampered, audit["checkpoint"], published["public_key_pem"]).ok

    def test_events_of_other_files_in_the_same_source_are_left_out(self, client, people, trained):
        from tests.gateway.conftest import good_file, upload

        other = upload(
            client,
            people["dora"],
            data_source=trained["source"]["id"],
            content=good_file(3, start=100),
        ).json()
        audit = _dossier(client, people["carol"], trained["model_id"]).json()["audit"]
        named = {entry["event"]["details"].get("file_id") for entry in audit["events"]}
        assert other["id"] not in named

    def test_the_export_is_audited(self, client, people, trained):
        _dossier(client, people["carol"], trained["model_id"])
        events = client.get(
            "/v1/audit/events", params={"action": "model.dossier_exported"}, headers=people["carol"]
        ).json()["data"]
        [event] = events
        assert event["resource"] == f"model:{trained['model_id']}"
        assert event["details"]["events"] >= 4

    def test_markdown_for_people(self, client, people, trained):
        response = _dossier(client, people["carol"], trained["model_id"], format="markdown")
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("text/markdown")
        text = response.text
        assert text.startswith(f"# Technical dossier: `{trained['model_id']}`")
        for file in trained["files"]:
            assert file["sha256"] in text and file["content_sha256"] in text
        for heading in (
            "Intended purpose",
            "Data preparation",
            "Evaluation",
            "Approvals",
            "Audit trail",
        ):
            assert heading in text
        assert factories.BASE_MANIFEST in text

    def test_export_needs_the_export_grant(self, client, people, trained):
        assert _dossier(client, people["bob"], trained["model_id"]).status_code == 403

    def test_another_tenants_model_is_not_found(self, client, token, trained):
        outsider = token("otto", "compliance-officer", tenant="acme")
        response = _dossier(client, outsider, trained["model_id"])
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "model_not_found"
