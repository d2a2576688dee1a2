"""The erasure search resumed after the gateway process running it is killed (-9) part
way through 200 MB of files: an end-to-end run, on one backend (tests/conftest.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from fastapi.testclient import TestClient

from gateway.main import create_app
from tests.conftest import END_TO_END_BACKEND
from tests.gateway.conftest import SOURCE, chat_line, upload
from tests.gateway.erasure.test_background_search import (
    SUBJECT,
    _background,
    _events,
    _wait_open,
)


@pytest.fixture(scope="module")
def backend():
    return END_TO_END_BACKEND


GATEWAY_PROCESS = """
import time
from gateway.state import GatewayState
from gateway.config import Settings
state = GatewayState.start(Settings())
print("started", flush=True)
time.sleep(600)
"""


def _big_file(index: int, size: int) -> bytes:
    """About ``size`` bytes of chat lines that all name the subject."""
    padding = "lorem ipsum dolor sit amet " * 14
    lines = []
    total = 0
    number = 0
    while total < size:
        line = json.dumps(
            chat_line(
                f"file {index} question {number}: customer {SUBJECT} asks about {padding}",
                f"answer {number} for that customer: {padding}",
            )
        ).encode()
        lines.append(line)
        total += len(line) + 1
        number += 1
    return b"\n".join(lines) + b"\n"


@pytest.mark.slow
def test_200_mb_resumed_after_the_gateway_process_is_killed(gateway_settings, people):
    files = 20
    settings = _background(gateway_settings, erasure_search_lease_seconds=1.0)
    with TestClient(create_app(settings)) as client:
        source = client.post(
            "/v1/data_sources", json={**SOURCE, "pii_action": "allow"}, headers=people["dora"]
        ).json()
        client.post(f"/v1/data_sources/{source['id']}/approve", headers=people["carol"])
        lines_per_file = []
        for index in range(files):
            content = _big_file(index, 10 << 20)
            lines_per_file.append(content.count(b"\n"))
            response = upload(client, people["dora"], data_source=source["id"], content=content)
            assert response.status_code == 200, response.text
        body = client.post(
            "/v1/erasure_requests", json={"subject": SUBJECT}, headers=people["carol"]
        ).json()
        assert body["status"] == "searching"
        assert body["search"]["bytes_total"] >= 200 << 20

        # A second gateway process takes the search; it is killed (-9) part way.
        env = {
            **os.environ,
            "TUNEGATE_DATABASE_URL": settings.database_url,
            "TUNEGATE_ARTIFACT_DIR": str(settings.artifact_dir),
            "TUNEGATE_ENV": "dev",
            "TUNEGATE_LOCAL_WORKERS": "0",
            "TUNEGATE_INGEST_WORKERS": "0",
            "TUNEGATE_ERASURE_SEARCH_POLL_SECONDS": "0.05",
            "TUNEGATE_ERASURE_SEARCH_LEASE_SECONDS": "1.0",
        }
        process = subprocess.Popen(  # noqa: S603 (our own interpreter and script)
            [sys.executable, "-c", GATEWAY_PROCESS], env=env, stdout=subprocess.PIPE
        )
        try:
            deadline = time.monotonic() + 120
            while True:
                search = client.get(
                    f"/v1/erasure_requests/{body['id']}", headers=people["carol"]
                ).json()["search"]
                if search["files_done"] >= 3:
                    break
                assert time.monotonic() < deadline, search
                assert process.poll() is None, "the second gateway process died"
                time.sleep(0.02)
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait()
        assert search["files_done"] < files, "the search ended before the kill: make it bigger"
        killed_at = search["files_done"]

    # The gateway restarts; once the dead process's lease runs out it resumes the search.
    restarted = settings.model_copy(update={"erasure_search_poll_seconds": 0.05})
    with TestClient(create_app(restarted)) as client:
        done = _wait_open(client, people["carol"], body["id"])
        assert done["search"]["status"] == "done"
        assert done["search"]["resumed"] == 1
        assert done["search"]["files_done"] == files
        found = sorted(m["matching_lines"] for m in done["findings"]["files"])
        assert found == sorted(lines_per_file)
        [resumed] = _events(client, people["carol"], "erasure.search_resumed")
        # Resumed where it was, not from the start (the content being read is read again).
        assert resumed["details"]["files_done"] >= killed_at
        assert len(_events(client, people["carol"], "erasure.search_started")) == 1
        assert len(_events(client, people["carol"], "erasure.search_completed")) == 1
        verified = client.get("/v1/audit/verify", headers=people["carol"]).json()
        assert verified["ok"] is True, verified
