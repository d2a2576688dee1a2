"""Pause, resume and checkpoints-as-models through the official `openai` SDK, a real uvicorn
and a real worker process, on the tiny model: a paused and resumed job draws the loss curve
of an uninterrupted one, holds no quota while paused, and its checkpoints are models a new
job, the adapter download and the registry take by name."""

from __future__ import annotations

import io
import tarfile
import time

import httpx
import openai
import pytest

from tests.conftest import END_TO_END_BACKEND
from tests.gateway.conftest import TINY_BASE

PURPOSE = "support-assistant"
TIMEOUT_SECONDS = 300
# 20 training examples one at a time: 120 steps, long enough for a pause to land mid-run
# (the worker sees it within a heartbeat or two).
LONG = {"n_epochs": 6, "batch_size": 1, "learning_rate_multiplier": 1}
NO_EVALUATION = {"enabled": False}  # the baselines' generations are not what is tested here


@pytest.fixture
def backend(request):  # an end-to-end run: one backend (tests/conftest.py)
    return END_TO_END_BACKEND


@pytest.fixture
def gateway_settings(gateway_settings, tiny_model_root):
    return gateway_settings.model_copy(
        update={
            "model_import_roots": [tiny_model_root],
            "heartbeat_seconds": 0.2,
            "lease_seconds": 30.0,
            "quota_concurrent_jobs": 1,
        }
    )


def _sdk(base: str, headers: dict) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{base}/v1",
        api_key=headers["Authorization"].removeprefix("Bearer "),
        max_retries=0,
        timeout=60,
    )


def _wait(sdk, job_id: str, until, what: str):
    deadline = time.monotonic() + TIMEOUT_SECONDS
    while True:
        job = sdk.fine_tuning.jobs.retrieve(job_id)
        if until(job):
            return job
        assert job.status not in ("failed", "cancelled"), job.error
        assert time.monotonic() < deadline, f"{job_id} still {job.status}, waiting for {what}"
        time.sleep(0.2)


def _loss_curve(sdk, job_id: str) -> list[tuple[int, float]]:
    events = sdk.fine_tuning.jobs.list_events(job_id, limit=100)  # iterating pages on
    steps = [e.data for e in events if e.type == "metrics" and "train_loss" in (e.data or {})]
    return sorted((data["step"], data["train_loss"]) for data in steps)


def _create(sdk, ready, **overrides):
    body = {
        "model": TINY_BASE,
        "training_file": ready["training"]["id"],
        "validation_file": ready["validation"]["id"],
        "seed": 11,
        "hyperparameters": LONG,
        "extra_body": {
            "purpose": PURPOSE,
            "lora": {"r": 4, "alpha": 8, "dropout": 0.1},
            "evaluation": NO_EVALUATION,
        },
        **overrides,
    }
    return sdk.fine_tuning.jobs.create(**body)


def _audit(client, people, action: str) -> list[dict]:
    return client.get(
        "/v1/audit/events", params={"action": action}, headers=people["carol"]
    ).json()["data"]


def test_pause_and_resume_through_the_sdk_match_an_uninterrupted_run(
    gateway_settings, live_server, client, people, ready, token
):
    base = live_server(gateway_settings.model_copy(update={"local_workers": 1}))
    bob, ada = _sdk(base, people["bob"]), _sdk(base, people["ada"])
    eve = _sdk(base, token("eve", "ml-engineer"))

    whole = _wait(bob, _create(bob, ready).id, lambda j: j.status == "succeeded", "success")
    with pytest.raises(openai.ConflictError) as finished:
        bob.fine_tuning.jobs.pause(whole.id)
    assert finished.value.code == "job_not_running"
    assert finished.value.body["details"]["status"] == "succeeded"

    job = _create(bob, ready)
    with pytest.raises(openai.ConflictError) as queued:
        bob.fine_tuning.jobs.resume(job.id)
    assert queued.value.code == "job_not_paused"
    _wait(bob, job.id, lambda j: j.status == "running" and (j.trained_tokens or 0) > 0, "steps")
    with pytest.raises(openai.PermissionDeniedError) as stranger:
        eve.fine_tuning.jobs.pause(job.id)  # an engineer, but neither requester nor admin
    assert stranger.value.code == "not_job_requester"
    assert bob.fine_tuning.jobs.pause(job.id).status == "pausing"
    _wait(bob, job.id, lambda j: j.status == "paused", "the pause")
    (checkpoint,) = bob.fine_tuning.jobs.checkpoints.list(job.id, limit=1).data
    assert 0 < checkpoint.step_number < 120  # mid-run, where the pause landed

    # Paused, it holds none of the tenant's one concurrent job: another is taken, and
    # then the resume is what the quota refuses, until that one is gone.
    other = _create(bob, ready, hyperparameters={"n_epochs": 1})
    with pytest.raises(openai.RateLimitError) as quota:
        ada.fine_tuning.jobs.resume(job.id)
    assert quota.value.body["details"]["quota"] == "concurrent_jobs"
    bob.fine_tuning.jobs.cancel(other.id)
    _wait(bob, other.id, lambda j: j.status == "cancelled", "the cancel")
    assert ada.fine_tuning.jobs.resume(job.id).status == "queued"  # an admin of the tenant
    resumed = _wait(bob, job.id, lambda j: j.status == "succeeded", "success")

    # The same loss at every step, each step trained once, and the same adapter.
    curve, expected = _loss_curve(bob, job.id), _loss_curve(bob, whole.id)
    assert [step for step, _ in curve] == [step for step, _ in expected] == list(range(1, 121))
    assert [loss for _, loss in curve] == pytest.approx([loss for _, loss in expected], rel=1e-5)
    adapters = [
        client.get(f"/v1/models/{name}", headers=people["bob"]).json()["adapter_sha256"]
        for name in (resumed.fine_tuned_model, whole.fine_tuned_model)
    ]
    assert adapters[0] == adapters[1]
    assert resumed.compute["resumed"] is True and resumed.compute["attempts"] == 1
    assert [e["actor"] for e in _audit(client, people, "job.pause_requested")] == ["bob"]
    assert [e["actor"] for e in _audit(client, people, "job.paused")] == ["system:worker"]
    assert [e["actor"] for e in _audit(client, people, "job.resumed")] == ["ada"]
    assert [e["actor"] for e in _audit(client, people, "job.pause_refused")] == ["eve"]

    _checkpoints_are_models(bob, base, people, ready, resumed)


def _checkpoints_are_models(bob, base: str, people, ready, job) -> None:
    """OpenAI's checkpoint list and paging; each checkpoint's name is a model: retrieved,
    its adapter downloaded, and continued by a new job."""
    page = bob.fine_tuning.jobs.checkpoints.list(job.id, limit=2)
    assert len(page.data) == 2 and page.has_more
    listed = list(bob.fine_tuning.jobs.checkpoints.list(job.id, limit=2))  # pages on
    assert len(listed) == 3  # the newest three are kept
    steps = [c.step_number for c in listed]
    assert steps == sorted(steps, reverse=True) and steps[0] == 120
    newest = listed[0]
    assert newest.id.startswith("ftckpt-") and newest.fine_tuning_job_id == job.id
    assert newest.fine_tuned_model_checkpoint == f"{job.fine_tuned_model}:ckpt-step-120"
    assert newest.metrics.step == 120 and newest.metrics.train_loss > 0
    assert 0 <= newest.metrics.train_mean_token_accuracy <= 1
    # Step 120 ends an epoch, which validates on the whole held-out set.
    assert newest.metrics.valid_loss == newest.metrics.full_valid_loss > 0

    name = listed[-1].fine_tuned_model_checkpoint
    model = bob.models.retrieve(name)
    assert model.id == name and model.object == "model"
    adapter = httpx.get(f"{base}/v1/models/{name}/adapter", headers=people["bob"], timeout=60)
    assert adapter.status_code == 200, adapter.text
    with tarfile.open(fileobj=io.BytesIO(adapter.content)) as archive:
        assert sorted(archive.getnames()) == ["adapter_config.json", "adapter_model.safetensors"]

    child = _create(
        bob,
        ready,
        model=name,
        hyperparameters={"n_epochs": 1},
        extra_body={"purpose": PURPOSE, "evaluation": NO_EVALUATION},
    )
    assert child.model == name
    child = _wait(bob, child.id, lambda j: j.status == "succeeded", "the child")
    lineage = bob.get(f"/models/{child.fine_tuned_model}/lineage", cast_to=object)
    assert name in str(lineage)
