"""The datasheet, erasure and home pages in a real Chromium, with hostile values seeded
through the API as a file name, an erasure subject and a decision's reason: no dialog opens,
no script runs, the CSP reports nothing, and axe finds no serious violation."""

from __future__ import annotations

import httpx
import pytest

from tests.gateway.conftest import SOURCE, chat_line, good_file, jsonl
from tests.gateway.console.browsing import HOSTILE, Watched, needs_chromium, sign_in

pytestmark = needs_chromium


@pytest.fixture
def backend(request):  # one backend is enough for what a browser sees
    return "sqlite"


def test_datasheets_and_erasure_requests_show_hostile_values_as_text(
    browser, live_server, gateway_settings, people
):
    base_url = live_server(gateway_settings)
    api = httpx.Client(base_url=base_url)
    source = api.post(
        "/v1/data_sources", json={**SOURCE, "pii_action": "allow"}, headers=people["dora"]
    ).json()
    assert api.post(f"/v1/data_sources/{source['id']}/approve", headers=people["carol"]).is_success
    files = []
    for number, value in enumerate(HOSTILE):
        uploaded = api.post(
            "/v1/files",
            data={"purpose": "fine-tune", "data_source": source["id"]},
            files={"file": (value, good_file(3, start=number) + jsonl(chat_line(value, "noted")))},
            headers=people["dora"],
        )
        assert uploaded.status_code == 200, uploaded.text
        files.append(uploaded.json())
    requests = [
        api.post("/v1/erasure_requests", json={"subject": value}, headers=people["carol"]).json()
        for value in HOSTILE[:2]
    ]
    decided = api.post(
        f"/v1/erasure_requests/{requests[1]['id']}/decide",
        json={"decision": "accept", "reason": HOSTILE[1]},
        headers=people["carol"],
    )
    assert decided.status_code == 200, decided.text

    officer = Watched(browser.new_context(bypass_csp=False), base_url)
    sign_in(officer, people["carol"]["Authorization"].removeprefix("Bearer "))
    officer.check_accessibility("/console")
    for file in files:
        officer.open(f"/console/files/{file['id']}")
        assert file["filename"] in officer.page.inner_text("h1")
    officer.screenshot("datasheet")
    officer.open(f"/console/data-sources/{source['id']}")  # its file list comes by htmx
    officer.page.wait_for_selector("table.files")
    listed = officer.page.inner_text("table.files")
    assert all(file["filename"] in listed for file in files)  # the API keeps a base name
    officer.check_accessibility(f"/console/data-sources/{source['id']} (with files)")
    officer.open(f"/console/erasure/{requests[1]['id']}")
    assert HOSTILE[1] in officer.page.inner_text("#erasure-progress")
    officer.open("/console/erasure")
    officer.screenshot("erasure-requests")

    open_path = f"/console/erasure/{requests[0]['id']}"
    officer.open(open_path)
    with officer.page.expect_response(lambda r: r.url.endswith("/progress"), timeout=10_000):
        pass  # htmx polls the search's figures while the request is open
    officer.screenshot("erasure")
    officer.page.select_option("#f-decision", "accept")
    officer.page.click("main button:has-text('Decide')")  # no reason: refused beside the field
    officer.page.wait_for_load_state("networkidle")
    assert "a reason is required" in officer.page.inner_text("#f-reason-error")
    officer.check_accessibility(f"{open_path} (form with errors)")
    officer.page.fill("#f-reason", HOSTILE[2])
    officer.page.click("main button:has-text('Decide')")
    officer.page.wait_for_load_state("networkidle")
    assert "decided" in officer.page.inner_text("[data-status]")
    officer.check_accessibility(f"{open_path} (decided)")
    officer.open("/console")
    assert officer.problems == []
