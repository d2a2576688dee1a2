from __future__ import annotations

import hashlib
import hmac
import json

import pytest
from sqlmodel import Session

from gateway.db import make_engine
from gateway.erasure.models import ErasureSalt
from tests.gateway.conftest import chat_line, good_file, jsonl, upload

EMAIL = "Jane.Roe@Example.org"


@pytest.fixture
def files(client, people, approved_source):
    """Two sources: one file mentions the subject, one does not; a third source keeps
    the same mention in a file of its own."""
    source = approved_source(pii_action="allow")
    other = approved_source(pii_action="allow")
    mention = jsonl(
        chat_line("hello there", "hi, how can I help you today?"),
        chat_line(f"my address is {EMAIL.lower()}", "thanks, noted for the ticket"),
        chat_line("anything else?", f"we wrote to {EMAIL} yesterday about it"),
    )
    uploaded = {
        "mention": upload(client, people["dora"], data_source=source["id"], content=mention),
        "clean": upload(client, people["dora"], data_source=source["id"], content=good_file()),
        "elsewhere": upload(client, people["dora"], data_source=other["id"], content=mention),
    }
    return {name: response.json() for name, response in uploaded.items()}


def _request(client, people, subject=EMAIL, **extra):
    return client.post(
        "/v1/erasure_requests", json={"subject": subject, **extra}, headers=people["carol"]
    )


class TestErasureRequest:
    def test_finds_the_file_versions_that_mention_the_subject(self, client, people, files):
        response = _request(client, people, reference="CASE-42")
        assert response.status_code == 201, response.text
        body = response.json()
        assert body["status"] == "open" and body["reference"] == "CASE-42"
        found = {match["file_id"]: match for match in body["findings"]["files"]}
        assert set(found) == {files["mention"]["id"], files["elsewhere"]["id"]}
        assert found[files["mention"]["id"]]["line_numbers"] == [2, 3]

    def test_the_identifier_is_kept_only_as_a_salted_hash(
        self, client, people, files, gateway_settings
    ):
        body = _request(client, people).json()
        assert EMAIL.lower() not in json.dumps(body).lower()
        [event] = client.get(
            "/v1/audit/events", params={"action": "erasure.requested"}, headers=people["carol"]
        ).json()["data"]
        assert EMAIL.lower() not in json.dumps(event).lower()
        assert event["details"]["subject_hmac_sha256"] == body["subject_sha256"]
        engine = make_engine(gateway_settings.database_url)
        with Session(engine) as session:
            salt = session.get(ErasureSalt, body["id"]).salt
        engine.dispose()
        expected = hmac.new(bytes.fromhex(salt), EMAIL.casefold().encode(), hashlib.sha256)
        assert body["subject_sha256"] == expected.hexdigest()
        assert body["subject_sha256"] != hashlib.sha256(EMAIL.casefold().encode()).hexdigest()

    def test_only_compliance_may_ask(self, client, people):
        response = client.post(
            "/v1/erasure_requests", json={"subject": EMAIL}, headers=people["bob"]
        )
        assert response.status_code == 403

    @pytest.mark.parametrize(
        "body",
        [
            {},
            {"subject": "  "},
            {"subject": "x" * 400},
            {"subject": EMAIL, "extra": 1},
            {"subject": EMAIL, "reference": "has space"},
        ],
    )
    def test_bad_requests_get_400(self, client, people, body):
        response = client.post("/v1/erasure_requests", json=body, headers=people["carol"])
        assert response.status_code == 400

    def test_another_tenants_files_are_not_searched(self, client, people, files, token):
        outsider = token("olga", "compliance-officer", tenant="other")
        body = client.post("/v1/erasure_requests", json={"subject": EMAIL}, headers=outsider).json()
        assert body["findings"]["files"] == []
        assert (
            client.get(f"/v1/erasure_requests/{body['id']}", headers=people["carol"]).status_code
            == 404
        )


class TestDecision:
    def test_delete_data_removes_content_and_keeps_hashes(
        self, client, people, files, gateway_settings
    ):
        request = _request(client, people).json()
        response = client.post(
            f"/v1/erasure_requests/{request['id']}/decide",
            json={"decision": "delete_data"},
            headers=people["carol"],
        )
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "decided"
        for name in ("mention", "elsewhere"):
            file = client.get(f"/v1/files/{files[name]['id']}", headers=people["dora"]).json()
            assert file["status"] == "deleted"
            assert file["sha256"] == files[name]["sha256"]  # the hash stays
            assert file["erasure_request_id"] == request["id"]
            gone = client.get(f"/v1/files/{files[name]['id']}/content", headers=people["dora"])
            assert gone.status_code == 410
        clean = client.get(f"/v1/files/{files['clean']['id']}/content", headers=people["dora"])
        assert clean.status_code == 200
        on_disk = {path.name for path in (gateway_settings.artifact_dir / "files").rglob("*")}
        assert files["mention"]["content_sha256"] not in on_disk
        assert files["clean"]["content_sha256"] in on_disk
        [event] = client.get(
            "/v1/audit/events", params={"action": "erasure.decided"}, headers=people["carol"]
        ).json()["data"]
        assert {f["file_id"] for f in event["details"]["erased_files"]} == {
            files["mention"]["id"],
            files["elsewhere"]["id"],
        }

    def test_destroying_the_salt_unlinks_the_request_from_the_person(
        self, client, people, files, gateway_settings
    ):
        request = _request(client, people).json()
        decided = client.post(
            f"/v1/erasure_requests/{request['id']}/decide",
            json={"decision": "retrain", "destroy_salt": True},
            headers=people["carol"],
        ).json()
        assert decided["salt_destroyed"] is True and decided["decision"] == "retrain"
        engine = make_engine(gateway_settings.database_url)
        with Session(engine) as session:
            assert session.get(ErasureSalt, request["id"]) is None
        engine.dispose()

    def test_accept_needs_a_reason_and_the_trail_keeps_its_hash(self, client, people, files):
        request = _request(client, people).json()
        path = f"/v1/erasure_requests/{request['id']}/decide"
        refused = client.post(path, json={"decision": "accept"}, headers=people["carol"])
        assert refused.status_code == 400
        reason = "legal hold on the claim file until 2027"
        accepted = client.post(
            path, json={"decision": "accept", "reason": reason}, headers=people["carol"]
        )
        assert accepted.status_code == 200
        [event] = client.get(
            "/v1/audit/events", params={"action": "erasure.decided"}, headers=people["carol"]
        ).json()["data"]
        assert event["details"]["reason_sha256"] == hashlib.sha256(reason.encode()).hexdigest()
        again = client.post(path, json={"decision": "delete_data"}, headers=people["carol"])
        assert again.status_code == 409
        assert again.json()["error"]["code"] == "already_decided"

    def test_listing(self, client, people, files):
        first = _request(client, people).json()
        page = client.get(
            "/v1/erasure_requests", params={"status": "open"}, headers=people["carol"]
        ).json()
        assert [item["id"] for item in page["data"]] == [first["id"]]
