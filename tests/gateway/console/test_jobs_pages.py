"""The job pages: the list, the submit form (errors beside fields, the dry run's estimate and
failing gates, the submission), a job's page with its live parts, and cancel and pause
through forms, each refused where the API refuses."""

from __future__ import annotations

import re

import pytest

from tests.gateway.conftest import TINY_BASE
from tests.gateway.console.conftest import csrf_of

PURPOSE = "support-assistant"


@pytest.fixture
def gateway_settings(gateway_settings, tiny_model_root):
    return gateway_settings.model_copy(update={"model_import_roots": [tiny_model_root]})


def _form(page_html: str, ready: dict, **overrides) -> dict:
    return {
        "csrf": csrf_of(page_html),
        "model": TINY_BASE,
        "training_file": ready["training"]["id"],
        "validation_file": ready["validation"]["id"],
        "purpose": PURPOSE,
        "n_epochs": "1",
        "batch_size": "auto",
        "learning_rate_multiplier": "auto",
        "lora_r": "4",
        "lora_alpha": "8",
        **overrides,
    }


def test_an_engineer_submits_follows_and_cancels_a_job(sign_in, ready):
    client = sign_in("bob", "ml-engineer")
    new = client.get("/console/jobs/new")
    assert new.status_code == 200
    for choice in (ready["training"]["id"], ready["validation"]["id"], TINY_BASE, PURPOSE):
        assert f'value="{choice}"' in new.text
    submitted = client.post("/console/jobs", data=_form(new.text, ready), follow_redirects=False)
    assert submitted.status_code == 303, submitted.text
    path = submitted.headers["location"]
    job_id = path.rsplit("/", 1)[1]
    assert re.fullmatch(r"ftjob-[0-9a-f]{16}", job_id)

    page = client.get(path)
    assert page.status_code == 200
    assert 'data-job-status="queued"' in page.text and 'hx-trigger="every 2s"' in page.text
    assert f'data-job-events="/console/jobs/{job_id}/events/stream"' in page.text
    assert "Loss: no points yet" in page.text and ">Cancel</button>" in page.text
    listing = client.get("/console/jobs")
    assert listing.status_code == 200 and job_id in listing.text
    assert job_id in client.get("/console/jobs?mine=1").text

    refused = client.post(f"{path}/pause", data={"csrf": csrf_of(page.text)})
    assert refused.status_code == 409 and "job_not_running" in refused.text
    cancelled = client.post(f"{path}/cancel", data={"csrf": csrf_of(page.text)})
    assert cancelled.status_code == 200  # back on the job's page
    assert 'data-job-status="cancelled"' in cancelled.text
    assert 'hx-trigger="every 2s"' not in cancelled.text  # polling stops at the end
    assert ">Cancel</button>" not in cancelled.text
    live = client.get(f"{path}/live")
    assert live.status_code == 200 and live.text.lstrip().startswith("<section")

    with client.stream("GET", f"{path}/events/stream") as stream:
        body = "".join(stream.iter_text())
    assert "event: fine_tuning.job.event" in body and "Job cancelled" in body
    assert body.rstrip().endswith('data: {"status": "cancelled"}')


def test_bad_input_comes_back_beside_the_fields(sign_in, ready):
    client = sign_in("bob", "ml-engineer")
    new = client.get("/console/jobs/new")
    for action in ("/console/jobs", "/console/jobs/dry-run"):
        bad = _form(new.text, ready, training_file="", n_epochs="lots", seed="-1")
        response = client.post(action, data=bad)
        assert response.status_code == 422, response.text
        assert "text/html" in response.headers["content-type"]
        assert "Pick a training file." in response.text
        assert re.search(r'id="f-n_epochs-error"[^>]*>[^<]*integer[^<]*\(or auto\)', response.text)
        assert 'id="f-seed-error"' in response.text
        assert 'value="lots"' in response.text  # what was typed stays


def test_the_dry_run_shows_the_cost_and_every_failing_gate(sign_in, ready):
    client = sign_in("eve", "ml-engineer")  # no grant on the source
    new = client.get("/console/jobs/new")
    assert ready["training"]["id"] not in new.text  # not offered: she may neither read nor train
    form = _form(new.text, ready, purpose="marketing")
    checked = client.post("/console/jobs/dry-run", data=form, headers={"HX-Request": "true"})
    assert checked.status_code == 200, checked.text
    section = checked.text.split('class="job-check"', 1)[1]
    assert "gates would refuse" in section and "device-hours" in section
    gates = re.findall(r'<tr class="decision-deny"><td>([a-z_]+)</td>', section)
    assert "policy" in gates and len(gates) >= 2
    assert "permission_denied" in section
    submitted = client.post("/console/jobs", data=form)
    assert submitted.status_code == 403 and "The submission was refused" in submitted.text

    bob = sign_in("bob", "ml-engineer")
    passing = bob.post(
        "/console/jobs/dry-run", data=_form(bob.get("/console/jobs/new").text, ready)
    )
    assert passing.status_code == 200 and "every gate passes" in passing.text


def test_a_role_without_job_create_is_refused_but_may_list(sign_in, ready):
    client = sign_in("carol", "compliance-officer")
    assert client.get("/console/jobs").status_code == 200
    refused = client.get("/console/jobs/new")
    assert refused.status_code == 403 and "permission_denied" in refused.text
    home = client.get("/console")
    posted = client.post("/console/jobs", data=_form(home.text, ready))
    assert posted.status_code == 403 and "Not allowed" in posted.text
    assert "Submit a job" not in client.get("/console/jobs").text
