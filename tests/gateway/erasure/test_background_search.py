"""The erasure search in the background: progress, resumption after a killed gateway
process, audit at start and end, the identifier held only while it runs."""

from __future__ import annotations

import json
import time

from fastapi.testclient import TestClient
from sqlmodel import Session

from gateway.db import make_engine
from gateway.erasure.models import ErasureSalt
from gateway.main import create_app
from tests.gateway.conftest import chat_line, good_file, jsonl, upload

SUBJECT = "CUST-48213"


def _background(settings, **overrides):
    # Every search goes to the background; the in-test searcher only runs when woken.
    return settings.model_copy(
        update={"erasure_inline_search_bytes": 0, "erasure_search_poll_seconds": 3600, **overrides}
    )


def _events(client, headers, action):
    return client.get("/v1/audit/events", params={"action": action}, headers=headers).json()["data"]


def _wait_open(client, headers, request_id, timeout=120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = client.get(f"/v1/erasure_requests/{request_id}", headers=headers).json()
        if body["status"] != "searching":
            return body
        time.sleep(0.05)
    raise AssertionError(f"the search did not end: {body['search']}")


def _pending_subject(settings, request_id):
    engine = make_engine(settings.database_url)
    try:
        with Session(engine) as session:
            return session.get(ErasureSalt, request_id).pending_subject
    finally:
        engine.dispose()


class TestBackgroundSearch:
    def test_searching_then_open_with_the_same_findings(self, gateway_settings, people, token):
        settings = _background(gateway_settings)
        with TestClient(create_app(settings)) as client:
            from tests.gateway.conftest import SOURCE

            proposed = client.post(
                "/v1/data_sources",
                json={**SOURCE, "pii_action": "allow"},
                headers=people["dora"],
            ).json()
            client.post(f"/v1/data_sources/{proposed['id']}/approve", headers=people["carol"])
            mention = jsonl(
                chat_line("hello", "hi there, how can I help?"),
                chat_line(f"my customer number is {SUBJECT.lower()}", "thanks, noted"),
            )
            for content in (mention, good_file()):
                response = upload(
                    client, people["dora"], data_source=proposed["id"], content=content
                )
                assert response.status_code == 200, response.text
            mention_id = client.get("/v1/files", headers=people["dora"]).json()["data"]
            filed = client.post(
                "/v1/erasure_requests", json={"subject": SUBJECT}, headers=people["carol"]
            )
            assert filed.status_code == 201, filed.text
            body = filed.json()
            assert body["status"] == "searching"
            assert body["search"]["status"] == "queued"
            assert body["search"]["files_total"] == 2 and body["search"]["files_done"] == 0
            assert "contents" not in body["search"] and "matches" not in body["search"]
            assert _pending_subject(settings, body["id"]) == SUBJECT
            listed = client.get(
                "/v1/erasure_requests", params={"status": "searching"}, headers=people["carol"]
            ).json()["data"]
            assert [r["id"] for r in listed] == [body["id"]]

            refused = client.post(
                f"/v1/erasure_requests/{body['id']}/decide",
                json={"decision": "delete_data"},
                headers=people["cora"],
            )
            assert refused.status_code == 409
            assert refused.json()["error"]["code"] == "erasure_search_running"

            client.app.state.gateway.erasure_searcher.wake()
            done = _wait_open(client, people["carol"], body["id"])
            assert done["search"]["status"] == "done"
            assert done["search"]["files_done"] == 2
            assert done["search"]["lines_scanned"] == done["search"]["lines_total"] == 6
            [match] = done["findings"]["files"]
            assert match["line_numbers"] == [2]
            assert match["file_id"] in {f["id"] for f in mention_id}
            # The identifier is gone once the search has ended, and was never in the trail.
            assert _pending_subject(settings, body["id"]) is None
            started = _events(client, people["carol"], "erasure.search_started")
            completed = _events(client, people["carol"], "erasure.search_completed")
            assert len(started) == 1 and len(completed) == 1
            assert completed[0]["details"]["files"][0]["matching_lines"] == 1
            trail = json.dumps(_events(client, people["carol"], "erasure.search_completed"))
            assert SUBJECT.lower() not in trail.lower()
            decided = client.post(
                f"/v1/erasure_requests/{body['id']}/decide",
                json={"decision": "delete_data"},
                headers=people["cora"],
            )
            assert decided.status_code == 200, decided.text
