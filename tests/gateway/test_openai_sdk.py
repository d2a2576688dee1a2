"""The official `openai` SDK, unchanged, against a real uvicorn on loopback with a real local
worker: upload a file, create a job, poll it to `succeeded`, list its events, retrieve the
fine-tuned model."""

from __future__ import annotations

import time

import pytest

from tests.gateway.conftest import TINY_BASE, good_file

PURPOSE = "support-assistant"
TIMEOUT_SECONDS = 300


@pytest.fixture
def gateway_settings(gateway_settings, tiny_model_root):
    return gateway_settings.model_copy(
        update={
            "model_import_roots": [tiny_model_root],
            "local_workers": 1,
            "heartbeat_seconds": 2.0,
            "lease_seconds": 30.0,
        }
    )


def _sdk(base: str, headers: dict):
    from openai import OpenAI

    return OpenAI(
        base_url=f"{base}/v1",
        api_key=headers["Authorization"].removeprefix("Bearer "),
        max_retries=0,
        timeout=60,
    )


def test_the_openai_sdk_fine_tunes_through_the_gateway(
    gateway_settings, live_server, people, approved_source, registered_base, grant, tmp_path
):
    source = approved_source(min_examples=10)
    grant("bob", f"ds:{source['id']}", "train")
    grant("bob", f"ds:{source['id']}", "upload")
    base = live_server(gateway_settings)
    bob = _sdk(base, people["bob"])

    path = tmp_path / "train.jsonl"
    path.write_bytes(good_file(24))
    uploaded = bob.files.create(
        file=path.open("rb"), purpose="fine-tune", extra_body={"data_source": source["id"]}
    )
    assert uploaded.status == "processed"

    job = bob.fine_tuning.jobs.create(
        model=TINY_BASE,
        training_file=uploaded.id,
        suffix="sdk",
        seed=3,
        hyperparameters={"n_epochs": 1, "batch_size": 4},
        extra_body={"purpose": PURPOSE, "lora": {"r": 4, "alpha": 8}},
    )
    assert job.status == "queued" and job.training_file == uploaded.id

    job = _finished(bob, job)
    assert job.status == "succeeded", job.error
    assert job.fine_tuned_model.startswith(f"ft:{TINY_BASE}:default:sdk:")
    assert job.trained_tokens and job.trained_tokens > 0

    events = list(bob.fine_tuning.jobs.list_events(job.id, limit=100))
    assert events and all(event.object == "fine_tuning.job.event" for event in events)
    assert any(event.type == "metrics" for event in events)

    model = bob.models.retrieve(job.fine_tuned_model)
    assert model.id == job.fine_tuned_model and model.object == "model"
    assert job.id in [j.id for j in bob.fine_tuning.jobs.list()]

    # Iterative improvement: the next version continues from this one's adapter (the
    # seed lets ml-engineers `use` their tenant's models).
    child = _finished(
        bob,
        bob.fine_tuning.jobs.create(
            model=job.fine_tuned_model,
            training_file=uploaded.id,
            suffix="v2",
            hyperparameters={"n_epochs": 1, "batch_size": 4},
            extra_body={"purpose": PURPOSE},
        ),
    )
    assert child.status == "succeeded", child.error
    lineage = bob.get(f"/models/{child.fine_tuned_model}/lineage", cast_to=object)
    assert job.fine_tuned_model in str(lineage)


def _finished(sdk, job):
    deadline = time.monotonic() + TIMEOUT_SECONDS
    while job.status not in ("succeeded", "failed", "cancelled"):
        assert time.monotonic() < deadline, f"job still {job.status}"
        time.sleep(1)
        job = sdk.fine_tuning.jobs.retrieve(job.id)
    return job
