"""DELETE /v1/models/{id}: the tenant's admin deletes a fine-tuned model's adapter; the
version, its lineage and its dossier stay, marked deleted."""

from __future__ import annotations

from pathlib import Path

from tests.gateway.registry import factories
from tests.gateway.registry.conftest import ask, promote


def _delete(client, headers, model_id):
    return client.delete(f"/v1/models/{model_id}", headers=headers)


def _adapter_paths(gateway_settings, model_id) -> list[Path]:
    row = factories.model_row(gateway_settings, model_id)
    return [Path(row.artifact_dir) / f["relative_path"] for f in row.adapter_files]


class TestDeleteModel:
    def test_the_adapter_goes_the_record_stays_marked_deleted(
        self, client, people, trained, gateway_settings
    ):
        model_id = trained["model_id"]
        paths = _adapter_paths(gateway_settings, model_id)
        assert all(path.is_file() for path in paths)
        pending = ask(client, people["bob"], model_id).json()
        response = _delete(client, people["ada"], model_id)
        assert response.status_code == 200, response.text
        assert response.json() == {"id": model_id, "object": "model", "deleted": True}
        assert not any(path.exists() for path in paths)
        model = client.get(f"/v1/models/{model_id}", headers=people["bob"]).json()
        assert model["deleted"] is True and model["deleted_by"] == "ada"
        assert model["status"] == "retired" and model["adapter_sha256"]
        listed = {m["id"] for m in client.get("/v1/models", headers=people["bob"]).json()["data"]}
        assert model_id not in listed
        with_deleted = client.get(
            "/v1/models", params={"include_deleted": "true"}, headers=people["bob"]
        ).json()["data"]
        assert model_id in {m["id"] for m in with_deleted}
        lineage = client.get(f"/v1/models/{model_id}/lineage", headers=people["bob"]).json()
        assert lineage["chain"][0]["deleted_at"] == model["deleted_at"]
        dossier = client.get(f"/v1/models/{model_id}/dossier", headers=people["carol"]).json()
        assert dossier["general"]["deleted_at"] == model["deleted_at"]
        assert dossier["approvals"]["deletion"]["deleted_by"] == "ada"
        [request] = dossier["approvals"]["promotion_requests"]
        assert request["id"] == pending["id"] and request["status"] == "withdrawn"
        adapter = client.get(f"/v1/models/{model_id}/adapter", headers=people["bob"])
        assert adapter.status_code == 410 and adapter.json()["error"]["code"] == "model_deleted"
        refused = ask(client, people["bob"], model_id)
        assert refused.status_code == 409 and refused.json()["error"]["code"] == "model_deleted"
        again = _delete(client, people["ada"], model_id)
        assert again.status_code == 409 and again.json()["error"]["code"] == "model_deleted"

    def test_the_audit_event_carries_the_hashes_of_what_was_removed(
        self, client, people, trained, gateway_settings
    ):
        row = factories.model_row(gateway_settings, trained["model_id"])
        assert _delete(client, people["ada"], trained["model_id"]).status_code == 200
        [event] = client.get(
            "/v1/audit/events", params={"action": "model.deleted"}, headers=people["ada"]
        ).json()["data"]
        assert event["actor"] == "ada" and event["resource"] == f"model:{row.id}"
        assert event["details"]["adapter_sha256"] == row.adapter_sha256
        assert event["details"]["previous_status"] == "candidate"
        assert sorted(event["details"]["removed"], key=lambda f: f["relative_path"]) == sorted(
            row.adapter_files, key=lambda f: f["relative_path"]
        )

    def test_a_production_model_must_be_retired_first(self, client, people, trained):
        model_id = trained["model_id"]
        promote(client, people, model_id)
        refused = _delete(client, people["ada"], model_id)
        assert refused.status_code == 409
        assert refused.json()["error"]["code"] == "model_in_production"
        assert client.post(f"/v1/models/{model_id}/retire", headers=people["carol"]).is_success
        assert _delete(client, people["ada"], model_id).status_code == 200

    def test_base_models_are_not_deleted_this_way(self, client, people, trained):
        refused = _delete(client, people["ada"], "tiny-llama")
        assert refused.status_code == 409
        assert refused.json()["error"]["code"] == "base_model_not_deletable"
        unknown = _delete(client, people["ada"], "ft:tiny-llama:default:x:ftjob-nothing")
        assert unknown.status_code == 404
        assert _delete(client, people["ada"], "no-such-base").status_code == 404

    def test_only_the_tenants_admin_deletes(self, client, people, token, trained):
        for person in ("bob", "eve", "carol", "dora"):
            assert _delete(client, people[person], trained["model_id"]).status_code == 403
        other_admin = token("otto", "admin", tenant="acme")
        response = _delete(client, other_admin, trained["model_id"])
        assert response.status_code == 404


class TestOpenAISdk:
    def test_the_sdk_deletes_a_model(self, gateway_settings, live_server, people, trained):
        from openai import OpenAI

        base = live_server(gateway_settings)
        api_key = people["ada"]["Authorization"].removeprefix("Bearer ")
        sdk = OpenAI(base_url=f"{base}/v1", api_key=api_key, max_retries=0)
        deleted = sdk.models.delete(trained["model_id"])
        assert deleted.id == trained["model_id"] and deleted.deleted is True
        assert deleted.object == "model"
        assert trained["model_id"] not in {model.id for model in sdk.models.list()}
