from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import pytest

from tests.gateway.registry import factories
from tests.gateway.registry.conftest import promote


def _events(client, headers, action):
    response = client.get("/v1/audit/events", params={"action": action}, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()["data"]


def _deny(client, people, sub, obj, act):
    rule = {"ptype": "p", "values": [f"user:{sub}", "default", obj, act, "deny"]}
    added = client.post("/v1/policies/rules", json={"rules": [rule]}, headers=people["ada"])
    assert added.status_code == 201, added.text


class TestListModels:
    def test_lists_base_and_fine_tuned_models_in_the_openai_shape(self, client, people, trained):
        response = client.get("/v1/models", headers=people["bob"])
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["object"] == "list"
        by_id = {item["id"]: item for item in body["data"]}
        assert set(by_id) == {"tiny-llama", trained["model_id"]}
        for item in body["data"]:
            assert item["object"] == "model"
            assert isinstance(item["created"], int) and item["owned_by"]
        tuned = by_id[trained["model_id"]]
        assert tuned["kind"] == "fine-tuned" and tuned["owned_by"] == "default"
        assert tuned["status"] == "candidate" and tuned["base_model"] == "tiny-llama"
        assert by_id["tiny-llama"]["kind"] == "base"

    def test_production_filter_says_which_data_versions_are_in_production(
        self, client, people, trained, gateway_settings
    ):
        other = factories.fine_tuned_model(
            gateway_settings, files=trained["files"][1:], suffix="other"
        )
        promote(client, people, trained["model_id"])
        body = client.get(
            "/v1/models", params={"status": "production"}, headers=people["bob"]
        ).json()
        assert [item["id"] for item in body["data"]] == [trained["model_id"]]
        assert other not in {item["id"] for item in body["data"]}
        [item] = body["data"]
        assert item["status"] == "production" and item["base_model"] == "tiny-llama"
        assert [(f["file_id"], f["data_source"], f["sha256"]) for f in item["data_files"]] == [
            (f["id"], trained["source"]["id"], f["sha256"]) for f in trained["files"]
        ]

    def test_a_model_the_caller_may_not_read_is_left_out(self, client, people, trained):
        _deny(client, people, "bob", f"model:{trained['model_id']}", "read")
        ids = {
            item["id"] for item in client.get("/v1/models", headers=people["bob"]).json()["data"]
        }
        assert ids == {"tiny-llama"}
        assert (
            client.get(f"/v1/models/{trained['model_id']}", headers=people["bob"]).status_code
            == 403
        )

    def test_pages_walk_every_model_once(self, client, people, trained, gateway_settings):
        factories.base_model(gateway_settings, "another-base")
        extra = factories.fine_tuned_model(
            gateway_settings, files=trained["files"], suffix="second"
        )
        seen, after = [], None
        while True:
            params = {"limit": 1, **({"after": after} if after else {})}
            page = client.get("/v1/models", params=params, headers=people["bob"]).json()
            seen += [item["id"] for item in page["data"]]
            if not page["has_more"]:
                break
            after = page["next_after"]
        assert seen == sorted(["tiny-llama", "another-base", trained["model_id"], extra])

    def test_another_tenants_models_are_not_listed(self, client, token, trained):
        outsider = token("olga", "ml-engineer", tenant="acme")
        ids = {item["id"] for item in client.get("/v1/models", headers=outsider).json()["data"]}
        assert ids == {"tiny-llama"}


class TestGetModel:
    def test_a_fine_tuned_model_by_its_colon_separated_id(self, client, people, trained):
        response = client.get(f"/v1/models/{trained['model_id']}", headers=people["bob"])
        assert response.status_code == 200, response.text
        assert response.json()["id"] == trained["model_id"]
        assert trained["model_id"].startswith("ft:tiny-llama:default:support:ftjob-")

    def test_a_base_model_by_name(self, client, people, trained):
        response = client.get("/v1/models/tiny-llama", headers=people["bob"])
        assert response.status_code == 200, response.text
        assert response.json()["manifest_sha256"] == factories.BASE_MANIFEST

    def test_another_tenants_model_is_not_found(self, client, token, trained):
        outsider = token("olga", "ml-engineer", tenant="acme")
        for suffix in ("", "/lineage", "/adapter"):
            response = client.get(f"/v1/models/{trained['model_id']}{suffix}", headers=outsider)
            assert response.status_code == 404, (suffix, response.text)
            assert response.json()["error"]["code"] == "model_not_found"

    def test_an_unknown_model_is_not_found(self, client, people):
        for model_id in ("ft:tiny-llama:default:x:ftjob-nothing", "no-such-base"):
            response = client.get(f"/v1/models/{model_id}", headers=people["bob"])
            assert response.status_code == 404
            assert response.json()["error"]["code"] == "model_not_found"

    def test_a_caller_without_any_grant_is_refused_before_existence_is_told(
        self, client, token, trained
    ):
        nobody = token("nobody")
        for model_id in (trained["model_id"], "ft:tiny-llama:default:x:ftjob-nothing"):
            response = client.get(f"/v1/models/{model_id}", headers=nobody)
            assert response.status_code == 403


class TestOpenAISdk:
    def test_the_sdk_lists_and_retrieves_models(
        self, gateway_settings, live_server, people, trained
    ):
        from openai import OpenAI

        base = live_server(gateway_settings)
        api_key = people["bob"]["Authorization"].removeprefix("Bearer ")
        sdk = OpenAI(base_url=f"{base}/v1", api_key=api_key, max_retries=0)
        assert {model.id for model in sdk.models.list()} == {"tiny-llama", trained["model_id"]}
        model = sdk.models.retrieve(trained["model_id"])
        assert model.id == trained["model_id"] and model.owned_by == "default"


class TestLineage:
    def test_the_chain_runs_down_to_the_base_manifest_with_data_hashes(
        self, client, people, trained, gateway_settings
    ):
        child = factories.fine_tuned_model(
            gateway_settings,
            files=trained["files"][1:],
            parent=trained["model_id"],
            suffix="child",
        )
        response = client.get(f"/v1/models/{child}/lineage", headers=people["bob"])
        assert response.status_code == 200, response.text
        body = response.json()
        assert [v["id"] for v in body["chain"]] == [child, trained["model_id"]]
        assert body["chain"][0]["parent_model_id"] == trained["model_id"]
        assert body["base_model"] == {
            "name": "tiny-llama",
            "manifest_sha256": factories.BASE_MANIFEST,
            "registered_manifest_sha256": factories.BASE_MANIFEST,
            "license": "Apache-2.0",
            "status": "active",
        }
        assert body["broken_at"] is None
        parent = body["chain"][1]
        redacted, clean = trained["files"]
        first = parent["data_files"][0]
        assert first["file_id"] == redacted["id"]
        assert first["sha256"] == redacted["sha256"] != first["content_sha256"]
        assert first["content_sha256"] == redacted["content_sha256"]
        assert first["redaction"]["input_sha256"] == redacted["sha256"]
        assert first["redaction"]["output_sha256"] == redacted["content_sha256"]
        assert first["redaction"]["recogniser_set"]
        assert parent["data_files"][1]["content_sha256"] == clean["content_sha256"]
        assert parent["job_id"] and parent["requested_by"] == "bob"
        assert all(d["policy_version"] for d in parent["decisions"])

    def test_a_parent_outside_the_tenant_breaks_the_chain_visibly(
        self, client, people, trained, gateway_settings
    ):
        foreign = "ft:tiny-llama:acme:x:ftjob-000000000000000000000000"
        child = factories.fine_tuned_model(
            gateway_settings, files=trained["files"], parent=foreign, suffix="orphan"
        )
        body = client.get(f"/v1/models/{child}/lineage", headers=people["bob"]).json()
        assert [v["id"] for v in body["chain"]] == [child]
        assert body["broken_at"] == foreign


class TestPromoteForCompatibility:
    """POST /v1/models/{id}/promote stays, but only asks: the promotion itself is a
    compliance officer's approval (tests/gateway/registry/test_promotions.py)."""

    def test_it_answers_202_with_a_pending_request_and_promotes_nothing(
        self, client, people, trained
    ):
        response = client.post(f"/v1/models/{trained['model_id']}/promote", headers=people["bob"])
        assert response.status_code == 202, response.text
        body = response.json()
        assert body["object"] == "model.promotion_request" and body["status"] == "pending"
        assert body["model_id"] == trained["model_id"] and body["requested_by"] == "bob"
        assert body["verdict"] == "passed" and body["reason"]
        model = client.get(f"/v1/models/{trained['model_id']}", headers=people["bob"]).json()
        assert model["status"] == "candidate" and model["promoted_by"] is None
        assert _events(client, people["carol"], "model.promoted") == []
        [event] = _events(client, people["carol"], "model.promotion_requested")
        assert event["details"]["request_id"] == body["id"]

    def test_a_failed_evaluation_needs_an_override(self, client, people, trained, gateway_settings):
        failed = factories.fine_tuned_model(
            gateway_settings, files=trained["files"], verdict="failed", suffix="failed"
        )
        response = client.post(f"/v1/models/{failed}/promote", headers=people["eve"])
        assert response.status_code == 409
        assert response.json()["error"]["code"] == "evaluation_not_passed"

    def test_an_override_reaches_the_model_on_approval_and_only_its_hash_the_trail(
        self, client, people, trained, gateway_settings
    ):
        failed = factories.fine_tuned_model(
            gateway_settings, files=trained["files"], verdict="failed", suffix="failed"
        )
        reason = "Accepted by Jane Roe: the failing check is known to be noisy"
        asked = client.post(
            f"/v1/models/{failed}/promote", json={"override_reason": reason}, headers=people["eve"]
        )
        assert asked.status_code == 202, asked.text
        assert asked.json()["override_reason"] == reason and asked.json()["verdict"] == "failed"
        approved = client.post(
            f"/v1/promotion_requests/{asked.json()['id']}/approve", headers=people["carol"]
        )
        assert approved.status_code == 200, approved.text
        row = factories.model_row(gateway_settings, failed)
        assert row.status == "production" and row.promotion_override_reason == reason
        [event] = _events(client, people["carol"], "model.promoted")
        assert event["details"]["overridden"] == ["evaluation_not_passed"]
        assert (
            event["details"]["override_reason_sha256"]
            == hashlib.sha256(reason.encode()).hexdigest()
        )
        assert "Jane" not in str(_events(client, people["carol"], "model.promotion_requested"))
        assert "Jane" not in str(event)

    def test_only_a_candidate_is_asked_for(self, client, people, trained):
        promote(client, people, trained["model_id"])
        again = client.post(f"/v1/models/{trained['model_id']}/promote", headers=people["eve"])
        assert again.status_code == 409 and again.json()["error"]["code"] == "not_candidate"

    @pytest.mark.parametrize(
        "body", [{"override_reason": "x"}, {"reasons": "because"}, {"override_reason": "ok\x00"}]
    )
    def test_bad_bodies_get_400(self, client, people, trained, body):
        response = client.post(
            f"/v1/models/{trained['model_id']}/promote", json=body, headers=people["eve"]
        )
        assert response.status_code == 400

    def test_asking_needs_the_promote_grant(self, client, people, trained):
        response = client.post(f"/v1/models/{trained['model_id']}/promote", headers=people["dora"])
        assert response.status_code == 403


class TestRetire:
    def test_retiring_takes_a_model_out_of_use(self, client, people, trained):
        url = f"/v1/models/{trained['model_id']}"
        response = client.post(f"{url}/retire", headers=people["carol"])
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "retired"
        assert response.json()["retired_by"] == "carol"
        again = client.post(f"{url}/retire", headers=people["carol"])
        assert again.status_code == 409 and again.json()["error"]["code"] == "already_retired"
        adapter = client.get(f"{url}/adapter", headers=people["bob"])
        assert adapter.status_code == 409
        assert adapter.json()["error"]["code"] == "model_retired"
        promote = client.post(f"{url}/promote", headers=people["eve"])
        assert promote.status_code == 409
        [event] = _events(client, people["carol"], "model.retired")
        assert event["details"]["previous_status"] == "candidate"

    def test_an_engineer_cannot_retire(self, client, people, trained):
        response = client.post(f"/v1/models/{trained['model_id']}/retire", headers=people["bob"])
        assert response.status_code == 403


class TestAdapterDownload:
    def test_the_archive_holds_the_recorded_files_byte_for_byte(
        self, client, people, trained, gateway_settings
    ):
        response = client.get(f"/v1/models/{trained['model_id']}/adapter", headers=people["bob"])
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "application/x-tar"
        row = factories.model_row(gateway_settings, trained["model_id"])
        assert response.headers["x-adapter-sha256"] == row.adapter_sha256
        with tarfile.open(fileobj=io.BytesIO(response.content)) as archive:
            got = {
                member.name: hashlib.sha256(archive.extractfile(member).read()).hexdigest()
                for member in archive.getmembers()
            }
        assert got == {f["relative_path"]: f["sha256"] for f in row.adapter_files}
        assert got["adapter/adapter_model.safetensors"] == row.adapter_sha256
        [event] = _events(client, people["carol"], "model.adapter_downloaded")
        assert event["actor"] == "bob"
        assert event["details"]["adapter_sha256"] == row.adapter_sha256

    def test_a_changed_adapter_file_is_refused(self, client, people, trained, gateway_settings):
        row = factories.model_row(gateway_settings, trained["model_id"])
        weights = (
            Path(gateway_settings.artifact_dir)
            / row.artifact_dir
            / ("adapter/adapter_model.safetensors")
        )
        weights.write_bytes(b"tampered")
        response = client.get(f"/v1/models/{trained['model_id']}/adapter", headers=people["bob"])
        assert response.status_code == 409
        assert response.json()["error"]["code"] == "adapter_hash_mismatch"

    def test_a_missing_adapter_file_is_gone(self, client, people, trained, gateway_settings):
        row = factories.model_row(gateway_settings, trained["model_id"])
        (Path(gateway_settings.artifact_dir) / row.artifact_dir / "MODEL_CARD.md").unlink()
        response = client.get(f"/v1/models/{trained['model_id']}/adapter", headers=people["bob"])
        assert response.status_code == 410
        assert response.json()["error"]["code"] == "adapter_missing"

    def test_use_is_needed(self, client, people, trained):
        response = client.get(f"/v1/models/{trained['model_id']}/adapter", headers=people["carol"])
        assert response.status_code == 403
