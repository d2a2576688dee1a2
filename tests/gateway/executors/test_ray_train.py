"""The Ray executor with ray_train_workers=2: a job's task claims it and runs the recipe on a
Ray Train TorchTrainer of two CPU workers (gloo), against a local Ray this module starts. The
claim, events and registration stay with the task; the workers train disjoint halves of each
batch and rank 0's adapter is the one a single process would train."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

ray = pytest.importorskip("ray")
pytest.importorskip("ray.train.torch", exc_type=ImportError)

from safetensors.torch import load_file  # noqa: E402

from gateway.executors import make_executor  # noqa: E402
from gateway.executors.ray import RAY_TRAIN_DIR_NAME, RayExecutor  # noqa: E402
from tests.conftest import END_TO_END_BACKEND  # noqa: E402
from tests.gateway.executors.conftest import registered_by_a_ray_task, wait_for  # noqa: E402
from trainer.recipe import train  # noqa: E402
from trainer.spec import TrainSpec  # noqa: E402

WORKERS = 2
LONG = {"hyperparameters": {"n_epochs": 2000, "batch_size": 2, "learning_rate_multiplier": 1}}


@pytest.fixture
def backend(request):  # an end-to-end run: one backend (tests/conftest.py)
    return END_TO_END_BACKEND


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # Logical CPUs: the job's task (1, mostly waiting) and two workers (1 each) on a machine
    # with fewer cores; each worker gets one OpenMP thread.
    ray.init(
        num_cpus=WORKERS + 1,
        include_dashboard=False,
        log_to_driver=False,
        object_store_memory=128 << 20,
    )
    yield
    ray.shutdown()


@pytest.fixture
def executor(world):
    settings = world.settings.model_copy(
        update={"executor": "ray", "ray_train_workers": WORKERS, "lease_seconds": 10.0}
    )
    made = make_executor(settings, world.engine)
    assert isinstance(made, RayExecutor)
    made.poll_seconds, made.cancel_grace_seconds, made.stop_grace_seconds = 0.5, 90.0, 90.0
    made.start()
    yield made
    made.stop()


def test_a_job_trains_on_two_ray_train_workers_and_registers_once(world, executor):
    job_id = world.add_job(
        spec_overrides={"checkpoint_every_steps": 3}, job_overrides={"executor": "ray"}
    )
    executor.submit(job_id)
    wait_for(
        lambda: world.job(job_id).status in {"succeeded", "failed"},
        timeout=300,
        interval=0.5,
        what="the job to finish",
    )

    job, model, artifact_dir = registered_by_a_ray_task(world, job_id)
    assert not (artifact_dir.parent / RAY_TRAIN_DIR_NAME).exists()

    # 24 examples in batches of 4: 6 steps, each worker training 2 examples of every batch.
    config = json.loads((artifact_dir / "training_config.json").read_text())
    assert config["data_parallel"]["world_size"] == WORKERS
    assert config["data_parallel"]["backend"] == "gloo"
    assert config["data_parallel"]["examples_per_rank"] == [12, 12]

    # Rank 0's events reached the job once each; its checkpoints were recorded by the task.
    events = world.events(job_id)
    assert events[0].message == "Fine-tuning job started"
    steps = [e.data["step"] for e in events if e.type == "metrics" and "train_loss" in e.data]
    assert steps == [1, 2, 3, 4, 5, 6]
    assert [c.step for c in world.checkpoints(job_id)] == [3, 6]
    assert [a for a, _, _ in world.audit(f"job:{job_id}")].count("job.succeeded") == 1

    # The adapter one process trains from the same spec: same tensors, same values up to
    # the order in which the two halves' gradients were summed.
    spec = TrainSpec.from_dict({**job.spec, "output_dir": str(world.artifact_dir / "single")})
    single = train(spec)
    single_adapter = load_file(Path(single.artifact_dir) / "adapter" / "adapter_model.safetensors")
    adapter = load_file(artifact_dir / "adapter" / "adapter_model.safetensors")
    assert adapter.keys() == single_adapter.keys()
    for name, tensor in single_adapter.items():
        assert torch.allclose(adapter[name], tensor, rtol=1e-3, atol=1e-5), name
    assert sorted(f["relative_path"] for f in model.adapter_files) == sorted(
        f.relative_path for f in single.files
    )
    wait_for(lambda: not executor._tasks, timeout=30, what="the task to be collected")


def test_cancel_reaches_the_ray_train_workers(world, executor):
    job_id = world.add_job(spec_overrides=LONG, job_overrides={"executor": "ray"})
    executor.submit(job_id)
    wait_for(
        lambda: any(e.type == "metrics" for e in world.events(job_id)),
        timeout=300,
        interval=0.5,
        what="training to start",
    )
    world.set_cancel(job_id)
    # The committed flag alone: the task's monitor sees it, the channel carries it to rank 0
    # and every rank stops at the same step boundary.
    wait_for(
        lambda: world.job(job_id).status == "cancelled",
        timeout=90,
        interval=0.5,
        what="the job to be cancelled",
    )

    assert world.models(job_id) == []
    cancelled = [d for a, _, d in world.audit(f"job:{job_id}") if a == "job.cancelled"]
    # Recorded by the run itself (a step count), not by the driver after a kill.
    assert len(cancelled) == 1 and cancelled[0]["step"] is not None
    assert not (Path(world.job(job_id).spec["output_dir"]) / "model").exists()
    wait_for(lambda: not executor._tasks, timeout=60, what="the task to be collected")


def test_a_worker_error_fails_the_job_with_its_own_code(world, executor, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": "not a list"}\n')
    job_id = world.add_job(
        spec_overrides={"training_file": str(bad)}, job_overrides={"executor": "ray"}
    )
    executor.submit(job_id)
    wait_for(
        lambda: world.job(job_id).status in {"succeeded", "failed"},
        timeout=300,
        interval=0.5,
        what="the job to end",
    )

    job = world.job(job_id)
    # The workers' DataFileError, not Ray Train's wrapper: the owner learns what was wrong.
    assert job.status == "failed" and job.error["code"] == "invalid_training_file", job.error
    assert world.models(job_id) == []
