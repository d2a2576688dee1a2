"""The Ray executor against a local Ray instance this module starts: a job submitted as a
Ray task is claimed, run and registered by the same code as a local worker, and a cancel
through the executor ends a running task's job as cancelled."""

from __future__ import annotations

import os

import pytest

ray = pytest.importorskip("ray")

from gateway.executors import make_executor  # noqa: E402
from gateway.executors.ray import RayExecutor  # noqa: E402
from tests.conftest import END_TO_END_BACKEND  # noqa: E402
from tests.gateway.executors.conftest import registered_by_a_ray_task, wait_for  # noqa: E402

# Far longer than any test waits: these runs end only by being cancelled or handed back.
LONG = {"hyperparameters": {"n_epochs": 2000, "batch_size": 1, "learning_rate_multiplier": 1}}


@pytest.fixture
def backend(request):  # an end-to-end run: one backend (tests/conftest.py)
    return END_TO_END_BACKEND


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # Workers inherit this process's environment (HF_HUB_OFFLINE included); Ray gives a
    # num_cpus=1 task one OpenMP thread.
    ray.init(
        num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=128 << 20
    )
    yield
    ray.shutdown()


@pytest.fixture
def executor(world):
    settings = world.settings.model_copy(update={"executor": "ray"})
    made = make_executor(settings, world.engine)
    assert isinstance(made, RayExecutor)
    # Generous: on a loaded 2-core CI machine a step of the tiny run can take seconds.
    made.poll_seconds, made.cancel_grace_seconds, made.stop_grace_seconds = 0.5, 60.0, 60.0
    made.start()
    yield made
    made.stop()
    # Someone else's Ray instance is left running.
    assert ray.is_initialized()


def test_submitted_job_runs_as_a_ray_task_and_registers(world, executor):
    job_id = world.add_job(job_overrides={"executor": "ray"})
    executor.submit(job_id)
    wait_for(
        lambda: world.job(job_id).status in {"succeeded", "failed"},
        timeout=180,
        interval=0.5,
        what="the job to finish",
    )

    registered_by_a_ray_task(world, job_id)
    messages = [e.message for e in world.events(job_id)]
    assert messages[0] == "Fine-tuning job started"
    assert any(e.type == "metrics" for e in world.events(job_id))
    assert "job.succeeded" in [a for a, _, _ in world.audit(f"job:{job_id}")]
    wait_for(lambda: not executor._tasks, timeout=10, what="the task to be collected")


def test_cancel_through_the_executor_stops_a_running_task(world, executor):
    job_id = world.add_job(spec_overrides=LONG, job_overrides={"executor": "ray"})
    # No submit: the driver's poll finds queued ray jobs by itself.
    wait_for(
        lambda: any(e.type == "metrics" for e in world.events(job_id)),
        timeout=180,
        interval=0.5,
        what="training to start",
    )
    world.set_cancel(job_id)
    executor.cancel(job_id)
    wait_for(
        lambda: world.job(job_id).status == "cancelled",
        timeout=60,
        interval=0.5,
        what="the job to be cancelled",
    )

    assert world.models(job_id) == []
    assert world.events(job_id)[-1].message == "Job cancelled"
    cancelled = [d for a, _, d in world.audit(f"job:{job_id}") if a == "job.cancelled"]
    # Recorded by the run itself (a step count), not by the driver after a kill.
    assert len(cancelled) == 1 and cancelled[0]["step"] is not None


def test_stop_hands_a_running_job_back(world, executor):
    job_id = world.add_job(spec_overrides=LONG, job_overrides={"executor": "ray"})
    executor.submit(job_id)
    wait_for(
        lambda: any(e.type == "metrics" for e in world.events(job_id)),
        timeout=180,
        interval=0.5,
        what="training to start",
    )
    # No cancel flag: only the interrupt of ray.cancel(force=False) can stop this run.
    executor.stop()
    job = world.job(job_id)
    assert job.status == "queued" and job.lease_owner is None and job.attempts == 0
    assert world.models(job_id) == []
