"""The console in a real Chromium (Playwright driving Debian's /usr/bin/chromium, headless)
against the real app under a real uvicorn on SQLite.

Hostile values go in through the API; every page is then opened and the test fails if a
dialog opens, a script runs or the Content-Security-Policy reports a violation. Axe-core
(vendored for the tests only) must report no serious or critical violation. Screenshots land
in var/test-artifacts/console/ (docs/console/ keeps the README's copies).
"""

from __future__ import annotations

import httpx
import pytest

from tests.gateway.conftest import SOURCE
from tests.gateway.console.browsing import HOSTILE, Watched, needs_chromium, post_from_page, sign_in

pytestmark = needs_chromium


@pytest.fixture
def backend(request):  # one backend is enough for what a browser sees
    return "sqlite"


def test_compliance_officer_reads_the_trail_and_nothing_hostile_runs(
    browser, live_server, gateway_settings, people
):
    base_url = live_server(gateway_settings)
    api = httpx.Client(base_url=base_url)
    seeded = []
    for number, value in enumerate(HOSTILE):
        body = {**SOURCE, "name": f"hostile {number}", "description": value}
        response = api.post("/v1/data_sources", json=body, headers=people["dora"])
        assert response.status_code == 201, response.text
        seeded.append(response.json()["id"])
        # A filter value is recorded in the audit.read event the search itself writes.
        api.get("/v1/audit/events", params={"actor": value}, headers=people["carol"])
    events = api.get("/v1/audit/events", headers=people["carol"]).json()["data"]
    hostile_reads = [e for e in events if e["details"].get("filters", {}).get("actor") in HOSTILE]
    assert len(hostile_reads) == len(HOSTILE)
    context = browser.new_context(bypass_csp=False)
    watched = Watched(context, base_url)
    carol = people["carol"]["Authorization"].removeprefix("Bearer ")

    sign_in(watched, carol, then="/console/audit")
    assert watched.page.url.endswith("/console/audit")
    watched.check_accessibility("/console/audit")
    watched.screenshot("audit")
    for path in ["/console", *(f"/console/audit/events/{e['seq']}" for e in events)]:
        watched.open(path)
    for value in HOSTILE:  # echoed back into the filter form
        watched.page.goto(f"{base_url}/console/audit?" + httpx.QueryParams(actor=value).__str__())
        assert watched.page.input_value("#f-actor") == value
    watched.open(f"/console/audit?resource=ds:{seeded[0]}")
    watched.screenshot("audit-filtered")
    # What was seeded is on the page as text: the markup is shown, not obeyed.
    watched.open(f"/console/audit/events/{hostile_reads[0]['seq']}")
    assert HOSTILE[0] in watched.page.inner_text("pre.json")
    watched.screenshot("audit-event")
    watched.page.click("text=Sign out")
    watched.page.wait_for_load_state("networkidle")
    assert "/console/login" in watched.page.url
    watched.open("/console/login")
    watched.screenshot("login")
    assert watched.problems == []
    context.close()


def test_data_owner_proposes_and_compliance_officer_approves(
    browser, live_server, gateway_settings, people
):
    base_url = live_server(gateway_settings)
    bearer = {
        name: header["Authorization"].removeprefix("Bearer ") for name, header in people.items()
    }
    owner = Watched(browser.new_context(), base_url)
    sign_in(owner, bearer["dora"], then="/console/data-sources/new")
    page = owner.page
    page.fill("#f-name", "invoices 2026")
    page.fill("#f-allowed_purposes", "invoice-extraction")
    page.check("#f-contains_personal_data")  # without a legal basis: refused beside the field
    page.click("main button[type=submit]")
    page.wait_for_load_state("networkidle")
    assert "legal_basis is required" in page.inner_text("#f-legal_basis-error")
    owner.check_accessibility("/console/data-sources (form with errors)")
    owner.screenshot("data-source-form-errors")
    page.select_option("#f-legal_basis", "contract")
    page.click("main button[type=submit]")
    page.wait_for_load_state("networkidle")
    source_path = page.url.removeprefix(base_url)
    assert source_path.startswith("/console/data-sources/ds-")
    assert "four eyes" in page.inner_text("main")
    post_from_page(owner, source_path + "/approve")  # the owner tries anyway
    assert "Not allowed" in page.inner_text("h1")
    assert "may not approve" in page.inner_text(".refusal")
    owner.screenshot("data-source-refused")

    officer = Watched(browser.new_context(), base_url)
    sign_in(officer, bearer["carol"], then="/console")
    assert "Data sources to approve" in officer.page.inner_text("main")
    officer.screenshot("home-compliance-officer")
    officer.open("/console/data-sources?status=proposed")
    officer.screenshot("data-sources-queue")
    officer.page.click("text=invoices 2026")
    officer.page.click("button:has-text('Approve')")
    officer.page.wait_for_load_state("networkidle")
    assert "approved" in officer.page.inner_text("h1 .status")
    assert "carol" in officer.page.inner_text("dl.facts")
    officer.check_accessibility(source_path)
    officer.screenshot("data-source-approved")
    assert owner.problems == [] and officer.problems == []


def test_officer_downloads_a_proof_checks_it_offline_then_verify_names_a_tampered_event(
    browser, live_server, gateway_settings, people, tmp_path
):
    import subprocess
    import sys
    import tarfile

    from sqlalchemy import create_engine, text

    from tests.audit.conftest import drop_append_only_triggers

    base_url = live_server(gateway_settings)
    api = httpx.Client(base_url=base_url)
    for number in range(3):
        body = {**SOURCE, "name": f"evidence {number}"}
        assert api.post("/v1/data_sources", json=body, headers=people["dora"]).status_code == 201
    officer = Watched(browser.new_context(accept_downloads=True), base_url)
    sign_in(officer, people["carol"]["Authorization"].removeprefix("Bearer "), then="/console")
    officer.open("/console/audit?action=data_source.proposed")
    rows = officer.page.locator("table.events tbody tr")
    assert rows.count() == 3
    officer.page.locator("table.events tbody tr a").first.click()
    officer.page.wait_for_load_state("networkidle")
    seq = int(officer.page.url.rsplit("/", 1)[1])
    assert "tunegate audit verify-proof" in officer.page.inner_text("main")
    with officer.page.expect_download() as download:
        officer.page.click("text=Download the proof bundle")
    bundle = tmp_path / download.value.suggested_filename
    download.value.save_as(bundle)
    with tarfile.open(bundle) as archive:
        archive.extractall(tmp_path, filter="data")
    checked = subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway.cli",
            "audit",
            "verify-proof",
            "proof.json",
            "checkpoint.json",
            "public-key.pem",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert '"ok": true' in checked.stdout

    officer.open("/console/audit/verify")
    officer.page.wait_for_selector(".verify.verified", timeout=30_000)
    officer.screenshot("audit-verified")
    engine = create_engine(gateway_settings.database_url)
    drop_append_only_triggers(engine)
    with engine.begin() as connection:
        connection.execute(
            text("UPDATE audit_events SET actor = 'mallory' WHERE seq = :seq"), {"seq": seq}
        )
    engine.dispose()
    officer.open("/console/audit/verify")
    officer.page.wait_for_selector(".verify.broken", timeout=30_000)
    assert f"Broken at event {seq}" in officer.page.inner_text("[data-status]")
    officer.screenshot("audit-verify-broken")
    assert officer.problems == []


def test_second_engineer_requests_promotion_and_officer_approves(
    browser, live_server, gateway_settings, people, token
):
    from tests.gateway.conftest import good_file
    from tests.gateway.registry import factories

    base_url = live_server(gateway_settings)
    api = httpx.Client(base_url=base_url)
    source = api.post("/v1/data_sources", json=SOURCE, headers=people["dora"]).json()
    assert api.post(f"/v1/data_sources/{source['id']}/approve", headers=people["carol"]).is_success
    uploaded = api.post(
        "/v1/files",
        data={"purpose": "fine-tune", "data_source": source["id"]},
        files={"file": ("train.jsonl", good_file(4))},
        headers=people["dora"],
    )
    assert uploaded.status_code == 200, uploaded.text
    factories.base_model(gateway_settings)
    model_id = factories.fine_tuned_model(gateway_settings, files=[uploaded.json()])

    eve = Watched(browser.new_context(), base_url)
    sign_in(eve, token("eve", "ml-engineer")["Authorization"].removeprefix("Bearer "))
    eve.open(f"/console/models/{model_id}")
    eve.screenshot("model")
    eve.page.fill("#f-reason", "beats the baselines on the invoices")
    if eve.page.locator("#f-override_reason").count():
        eve.page.fill("#f-override_reason", "the quick model cannot learn; accepted for the demo")
    eve.page.click("main button:has-text('Request promotion')")
    eve.page.wait_for_load_state("networkidle")
    assert "pending" in eve.page.inner_text("main table:last-of-type")

    officer = Watched(browser.new_context(), base_url)
    sign_in(officer, people["carol"]["Authorization"].removeprefix("Bearer "))
    officer.open(f"/console/models/{model_id}")
    officer.page.click("main button:has-text('Approve')")
    officer.page.wait_for_load_state("networkidle")
    assert "production" in officer.page.inner_text("h1")
    officer.check_accessibility(f"/console/models/{model_id} (approved)")
    officer.screenshot("model-promoted")
    assert eve.problems == [] and officer.problems == []
