"""Journey 3 in a real Chromium: an engineer checks a job in the submit form (the dry run's
estimate and gates), submits it, and watches it reach `succeeded` on the tiny model, its
events arriving over the console's stream and its loss chart drawn, with a real uvicorn and
a real local worker on SQLite."""

from __future__ import annotations

import httpx
import pytest

from tests.gateway.conftest import SOURCE, TINY_BASE, good_file
from tests.gateway.console.browsing import Watched, needs_chromium, sign_in

pytestmark = needs_chromium

PURPOSE = "support-assistant"


@pytest.fixture
def backend(request):  # one backend is enough for what a browser sees
    return "sqlite"


@pytest.fixture
def gateway_settings(gateway_settings, tiny_model_root):
    return gateway_settings.model_copy(
        update={
            "model_import_roots": [tiny_model_root],
            "local_workers": 1,
            "heartbeat_seconds": 0.5,
            "lease_seconds": 30.0,
        }
    )


def _ready(api: httpx.Client, people, tiny_model_root) -> dict:
    source = api.post(
        "/v1/data_sources", json={**SOURCE, "min_examples": 10}, headers=people["dora"]
    ).json()
    assert api.post(f"/v1/data_sources/{source['id']}/approve", headers=people["carol"]).is_success
    files = {}
    for role, content in (("training", good_file(12)), ("validation", good_file(4, start=500))):
        uploaded = api.post(
            "/v1/files",
            data={"purpose": "fine-tune", "data_source": source["id"]},
            files={"file": (f"{role}.jsonl", content)},
            headers=people["dora"],
        )
        assert uploaded.status_code == 200, uploaded.text
        files[role] = uploaded.json()["id"]
    registered = api.post(
        "/v1/base_models",
        json={
            "name": TINY_BASE,
            "license": "apache-2.0",
            "source": {"directory": str(tiny_model_root / TINY_BASE)},
        },
        headers=people["ada"],
    )
    assert registered.status_code == 201, registered.text
    rules = [
        {"ptype": "p", "values": ["user:bob", "default", f"ds:{source['id']}", act, "allow"]}
        for act in ("read", "train")
    ]
    granted = api.post("/v1/policies/rules", json={"rules": rules}, headers=people["ada"])
    assert granted.status_code == 201, granted.text
    return files


def test_engineer_checks_submits_and_watches_a_job_succeed(
    browser, live_server, gateway_settings, people, tiny_model_root
):
    base_url = live_server(gateway_settings)
    files = _ready(httpx.Client(base_url=base_url, timeout=60), people, tiny_model_root)
    bob = Watched(browser.new_context(), base_url)
    sign_in(bob, people["bob"]["Authorization"].removeprefix("Bearer "), then="/console/jobs")
    page = bob.page
    assert page.url.endswith("/console/jobs")
    bob.check_accessibility("/console/jobs (empty)")

    page.click("text=Submit a job")
    page.wait_for_load_state("networkidle")
    page.select_option("#f-model", TINY_BASE)
    page.select_option("#f-training_file", files["training"])
    page.select_option("#f-validation_file", files["training"])  # overlaps: refused
    page.select_option("#f-purpose", PURPOSE)
    page.fill("#f-n_epochs", "2")
    page.fill("#f-batch_size", "4")
    page.fill("#f-lora_r", "4")
    page.fill("#f-lora_alpha", "8")
    page.fill("#f-seed", "5")
    page.uncheck("#f-evaluation")  # the baselines' generations are not what is shown here
    page.click("main button:has-text('Check')")  # htmx: the form comes back with the result
    page.wait_for_selector(".job-check")
    check = page.inner_text(".job-check")
    assert "1 gate would refuse" in check and "device-hours" in check
    assert "train_validation_overlap" in page.inner_text(".job-check table.refusals")
    assert page.input_value("#f-n_epochs") == "2"  # the form kept what was chosen
    bob.check_accessibility("/console/jobs/new (checked)")
    bob.screenshot("job-new-dry-run")
    page.select_option("#f-validation_file", files["validation"])
    page.click("main button:has-text('Check')")
    page.wait_for_selector(".job-check:has-text('every gate passes')")

    page.click("main button:has-text('Submit')")
    page.wait_for_url("**/console/jobs/ftjob-*")
    job_path = page.url.removeprefix(base_url)
    page.wait_for_selector("#job-live[data-job-status=succeeded]", timeout=120_000)
    page.wait_for_selector("[data-job-events-status]:has-text('succeeded')", timeout=30_000)
    assert "successfully completed" in page.inner_text("ol.job-events")
    chart = page.locator("figure.job-loss svg")
    assert chart.locator("polyline").count() == 2  # training and validation loss
    assert "Fine-tuned model" in page.inner_text("#job-live")
    assert page.locator("#job-live button").count() == 0  # nothing left to cancel
    bob.check_accessibility(f"{job_path} (succeeded)")
    bob.screenshot("job-succeeded")

    bob.open("/console/jobs")
    assert "succeeded" in page.inner_text("table.jobs")
    bob.screenshot("jobs")
    assert bob.problems == [], "\n".join(bob.problems)
