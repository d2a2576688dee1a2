"""DELETE /v1/files/{id}: the content goes and the file can no longer be trained on; its
hashes, datasheet and lineage stay. Not erasure."""

from __future__ import annotations

import pytest

from gateway.files.service import JOB_FINAL_STATUSES, source_dir
from gateway.jobs.models import FINAL_STATUSES
from ingest import content_path
from tests.gateway.conftest import TINY_BASE, good_file, upload
from tests.gateway.registry import factories

PURPOSE = "support-assistant"


@pytest.fixture
def gateway_settings(gateway_settings, tiny_model_root):
    return gateway_settings.model_copy(update={"model_import_roots": [tiny_model_root]})


def _content(settings, file: dict):
    directory = source_dir(settings, tenant="default", data_source_id=file["data_source"])
    return content_path(directory, file["content_sha256"])


def _delete(client, headers, file_id):
    return client.delete(f"/v1/files/{file_id}", headers=headers)


def _submit(client, headers, training_file):
    body = {"model": TINY_BASE, "training_file": training_file, "purpose": PURPOSE}
    return client.post("/v1/fine_tuning/jobs", json=body, headers=headers)


class TestDeleteFile:
    def test_the_content_goes_the_record_stays(self, client, people, ready, gateway_settings):
        file = ready["validation"]
        path = _content(gateway_settings, file)
        assert path.is_file()
        response = _delete(client, people["dora"], file["id"])
        assert response.status_code == 200, response.text
        assert response.json() == {"id": file["id"], "object": "file", "deleted": True}
        assert not path.exists()
        row = client.get(f"/v1/files/{file['id']}", headers=people["dora"]).json()
        assert row["status"] == "deleted" and row["deleted_by"] == "dora"
        assert row["deleted_at"] and row["erasure_request_id"] is None
        assert (row["sha256"], row["content_sha256"]) == (file["sha256"], file["content_sha256"])
        assert row["report"] == file["report"]
        content = client.get(f"/v1/files/{file['id']}/content", headers=people["dora"])
        assert content.status_code == 410 and content.json()["error"]["code"] == "file_deleted"
        again = _delete(client, people["dora"], file["id"])
        assert again.status_code == 410 and again.json()["error"]["code"] == "file_deleted"

    def test_the_audit_event_carries_the_hashes(self, client, people, ready):
        file = ready["validation"]
        assert _delete(client, people["dora"], file["id"]).status_code == 200
        [event] = client.get(
            "/v1/audit/events", params={"action": "file.deleted"}, headers=people["carol"]
        ).json()["data"]
        assert event["actor"] == "dora" and event["resource"] == f"ds:{file['data_source']}"
        details = event["details"]
        assert details["file_id"] == file["id"] and details["sha256"] == file["sha256"]
        assert details["content_sha256"] == file["content_sha256"]
        assert details["content_shared"] is False

    def test_the_job_gates_refuse_a_deleted_file(self, client, people, ready):
        assert _delete(client, people["dora"], ready["training"]["id"]).status_code == 200
        response = _submit(client, people["bob"], ready["training"]["id"])
        assert response.status_code == 400, response.text
        assert response.json()["error"]["code"] == "file_not_usable"

    def test_a_file_a_queued_job_uses_is_409_naming_the_job(self, client, people, ready):
        job = _submit(client, people["bob"], ready["training"]["id"])
        assert job.status_code == 200, job.text
        job_id = job.json()["id"]
        refused = _delete(client, people["dora"], ready["training"]["id"])
        assert refused.status_code == 409
        error = refused.json()["error"]
        assert error["code"] == "file_in_use" and error["details"]["jobs"] == [job_id]
        assert job_id in error["message"]
        cancelled = client.post(f"/v1/fine_tuning/jobs/{job_id}/cancel", headers=people["bob"])
        assert cancelled.status_code == 200
        assert _delete(client, people["dora"], ready["training"]["id"]).status_code == 200

    def test_identical_bytes_another_file_holds_stay(self, client, people, ready, gateway_settings):
        source = ready["source"]["id"]
        twin = upload(client, people["dora"], data_source=source, content=good_file(20)).json()
        assert twin["content_sha256"] == ready["training"]["content_sha256"]
        assert _delete(client, people["dora"], ready["training"]["id"]).status_code == 200
        assert _content(gateway_settings, twin).is_file()
        content = client.get(f"/v1/files/{twin['id']}/content", headers=people["dora"])
        assert content.status_code == 200 and content.content == good_file(20)

    def test_a_model_trained_on_it_stays_explainable(self, client, people, ready, gateway_settings):
        factories.base_model(gateway_settings, "tiny-base-2")
        model_id = factories.fine_tuned_model(
            gateway_settings, files=[ready["training"]], base="tiny-base-2"
        )
        assert _delete(client, people["dora"], ready["training"]["id"]).status_code == 200
        dossier = client.get(f"/v1/models/{model_id}/dossier", headers=people["carol"]).json()
        [described] = dossier["data"]["files"]
        assert described["sha256"] == ready["training"]["sha256"]
        assert described["deleted_at"] and described["datasheet"] == ready["training"]["report"]
        steps = [step["step"] for step in dossier["preparation"][0]["steps"]]
        assert steps[-1] == "deletion" and "erasure" not in steps

    def test_who_may_delete(self, client, people, ready, token):
        file_id = ready["training"]["id"]
        for person in ("bob", "carol", "ada"):
            assert _delete(client, people[person], file_id).status_code == 403, person
        outsider = token("olga", "data-owner", tenant="acme")
        assert _delete(client, outsider, file_id).status_code == 404

    def test_the_jobs_final_statuses_are_the_jobs_own(self):
        assert JOB_FINAL_STATUSES == FINAL_STATUSES


class TestOpenAISdk:
    def test_the_sdk_deletes_a_file(self, gateway_settings, live_server, people, ready):
        from openai import OpenAI

        base = live_server(gateway_settings)
        api_key = people["dora"]["Authorization"].removeprefix("Bearer ")
        sdk = OpenAI(base_url=f"{base}/v1", api_key=api_key, max_retries=0)
        deleted = sdk.files.delete(ready["validation"]["id"])
        assert deleted.id == ready["validation"]["id"] and deleted.deleted is True
        assert deleted.object == "file"
        assert sdk.files.retrieve(ready["validation"]["id"]).status == "deleted"
