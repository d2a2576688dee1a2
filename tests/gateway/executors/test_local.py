"""Leases and worker processes: expiry, kill -9 mid-job, resume, the gateway's workers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlmodel import Session

from gateway.executors import make_executor
from gateway.executors.leases import claim, reap_expired
from gateway.executors.local import LocalExecutor, work
from gateway.jobs.models import FineTuningJob, JobCheckpoint
from tests.gateway.executors.conftest import wait_for

REPO = Path(__file__).resolve().parents[3]
LONG = {"hyperparameters": {"n_epochs": 60, "batch_size": 1, "learning_rate_multiplier": 1}}


def _expire(world, job_id: str) -> None:
    with Session(world.engine) as session:
        job = session.get(FineTuningJob, job_id)
        job.lease_expires_at = time.time() - 1
        session.add(job)
        session.commit()


class TestReaper:
    def test_expired_lease_without_checkpoint_fails_worker_lost(self, world):
        job_id = world.add_job()
        claim(world.engine, worker_id="gone", lease_seconds=30)
        assert reap_expired(world.engine, max_attempts=2) == []  # still leased
        _expire(world, job_id)
        assert reap_expired(world.engine, max_attempts=2) == [(job_id, "failed")]
        job = world.job(job_id)
        assert job.status == "failed" and job.error["code"] == "worker_lost"
        assert [a for a, _, _ in world.audit(f"job:{job_id}")] == ["job.failed"]

    def test_expired_lease_with_checkpoint_requeues_to_resume(self, world, tmp_path):
        job_id = world.add_job()
        claim(world.engine, worker_id="gone", lease_seconds=30)
        checkpoint_dir = tmp_path / "step-000002"
        checkpoint_dir.mkdir()
        with Session(world.engine) as session:
            session.add(
                JobCheckpoint(
                    id="ftckpt-x",
                    job_id=job_id,
                    created_at=1,
                    step=2,
                    metrics={},
                    adapter_sha256="0" * 64,
                    path=str(checkpoint_dir),
                )
            )
            session.commit()
        _expire(world, job_id)
        assert reap_expired(world.engine, max_attempts=2) == [(job_id, "queued")]
        job = world.job(job_id)
        assert job.status == "queued" and job.lease_owner is None
        assert job.spec["resume_from_checkpoint"] == str(checkpoint_dir)
        assert "job.requeued" in [a for a, _, _ in world.audit(f"job:{job_id}")]
        # The last attempt is not retried: the job fails instead.
        claim(world.engine, worker_id="gone-too", lease_seconds=30)
        _expire(world, job_id)
        assert reap_expired(world.engine, max_attempts=2) == [(job_id, "failed")]

    def test_a_worker_lost_while_pausing_leaves_the_job_paused(self, world, tmp_path):
        job_id = world.add_job()
        claim(world.engine, worker_id="gone", lease_seconds=30)
        world.set_status(job_id, "pausing")
        _expire(world, job_id)
        assert reap_expired(world.engine, max_attempts=2) == [(job_id, "paused")]
        job = world.job(job_id)
        assert job.status == "paused" and job.lease_owner is None and job.attempts == 1
        assert "resume_from_checkpoint" not in job.spec or not job.spec["resume_from_checkpoint"]
        (paused,) = [d for a, _, d in world.audit(f"job:{job_id}") if a == "job.paused"]
        assert paused["worker_lost"] and paused["checkpoint_id"] is None

    def test_resume_refuses_a_checkpoint_that_changed(self, world, tmp_path):
        job_id = world.add_job()
        claim(world.engine, worker_id="gone", lease_seconds=30)
        checkpoint_dir = tmp_path / "step-000002"
        checkpoint_dir.mkdir()
        (checkpoint_dir / "adapter_model.safetensors").write_bytes(b"not what was recorded")
        with Session(world.engine) as session:
            session.add(
                JobCheckpoint(
                    id="ftckpt-y",
                    job_id=job_id,
                    created_at=1,
                    step=2,
                    metrics={},
                    adapter_sha256="0" * 64,
                    path=str(checkpoint_dir),
                )
            )
            session.commit()
        _expire(world, job_id)
        reap_expired(world.engine, max_attempts=2)
        work(world.settings, worker_id="w2", engine=world.engine, until_idle=True)
        assert world.job(job_id).error["code"] == "checkpoint_hash_mismatch"


def _start_worker(world) -> subprocess.Popen:
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "TUNEGATE_DATABASE_URL": world.settings.database_url,
        "TUNEGATE_ARTIFACT_DIR": str(world.artifact_dir),
        "TUNEGATE_LEASE_SECONDS": str(world.settings.lease_seconds),
        "TUNEGATE_HEARTBEAT_SECONDS": str(world.settings.heartbeat_seconds),
        "TUNEGATE_MAX_ATTEMPTS": str(world.settings.max_attempts),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "worker"],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _kill(process: subprocess.Popen) -> None:
    os.kill(process.pid, signal.SIGKILL)
    process.wait(10)


@pytest.mark.slow
class TestWorkerKilled:
    def test_kill_9_without_checkpoint_fails_worker_lost(self, world):
        job_id = world.add_job(spec_overrides={**LONG, "checkpoint_every_epoch": False})
        process = _start_worker(world)
        try:
            wait_for(
                lambda: any(e.type == "metrics" for e in world.events(job_id)),
                timeout=120,
                what="training to start",
            )
        finally:
            _kill(process)
        assert world.job(job_id).status == "running"
        assert reap_expired(world.engine, max_attempts=2) == []  # lease not yet expired
        time.sleep(world.settings.lease_seconds + 0.5)
        assert reap_expired(world.engine, max_attempts=2) == [(job_id, "failed")]
        job = world.job(job_id)
        assert job.error["code"] == "worker_lost"
        assert world.models(job_id) == []
        assert not (Path(job.spec["output_dir"]) / "model").exists()
        failed = [d for a, _, d in world.audit(f"job:{job_id}") if a == "job.failed"]
        assert failed and failed[0]["code"] == "worker_lost"

    def test_kill_9_with_checkpoint_resumes_and_registers_once(self, world):
        # The checkpoint policy of a job created over the API (every epoch's end), nothing
        # more: the worker dies after the first epochs, the next resumes mid-run.
        hyperparameters = {**LONG["hyperparameters"], "n_epochs": 25}
        job_id = world.add_job(spec_overrides={"hyperparameters": hyperparameters})
        assert world.job(job_id).spec["checkpoint_every_epoch"] is True
        process = _start_worker(world)
        try:
            wait_for(lambda: world.checkpoints(job_id), timeout=120, what="a checkpoint")
            # Live workers keep their lease: nothing to reap while it trains.
            assert reap_expired(world.engine, max_attempts=2) == []
        finally:
            _kill(process)
        assert world.job(job_id).status == "running"
        last_step = world.checkpoints(job_id)[-1].step
        seen_before = {e.seq for e in world.events(job_id)}
        time.sleep(world.settings.lease_seconds + 0.5)
        assert reap_expired(world.engine, max_attempts=2) == [(job_id, "queued")]

        assert work(world.settings, worker_id="w2", engine=world.engine, until_idle=True) == 1
        job = world.job(job_id)
        assert job.status == "succeeded" and job.attempts == 2
        (model,) = world.models(job_id)
        assert model.compute["resumed"] is True
        total = model.compute["total_steps"]
        steps_per_epoch = total // hyperparameters["n_epochs"]
        # A real mid-run resume: from an epoch's end, neither the start nor the end.
        assert 0 < last_step < total and last_step % steps_per_epoch == 0
        events = world.events(job_id)
        assert any(e.message.startswith(f"Training resumed at step {last_step}") for e in events)
        second = [
            e.data["step"]
            for e in events
            if e.seq not in seen_before and e.type == "metrics" and "train_loss" in e.data
        ]
        assert second == list(range(last_step + 1, total + 1))
        actions = [a for a, _, _ in world.audit(f"job:{job_id}")]
        assert actions.count("job.requeued") == 1 and actions.count("job.succeeded") == 1


@pytest.mark.slow
class TestLocalExecutor:
    def test_gateway_workers_run_a_submitted_job(self, world):
        settings = world.settings.model_copy(update={"local_workers": 1})
        executor = make_executor(settings, world.engine)
        assert isinstance(executor, LocalExecutor)
        executor.start()
        try:
            job_id = world.add_job()
            executor.submit(job_id)
            wait_for(
                lambda: world.job(job_id).status == "succeeded",
                timeout=180,
                interval=0.5,
                what="the job to succeed",
            )
        finally:
            executor.stop()
        assert executor.workers_alive == 0
        assert len(world.models(job_id)) == 1

    def test_stop_hands_a_running_job_back(self, world):
        settings = world.settings.model_copy(update={"local_workers": 1})
        executor = make_executor(settings, world.engine)
        executor.start()
        job_id = world.add_job(spec_overrides=LONG)
        try:
            wait_for(
                lambda: any(e.type == "metrics" for e in world.events(job_id)),
                timeout=180,
                what="training to start",
            )
        finally:
            executor.stop()
        job = world.job(job_id)
        assert job.status == "queued" and job.lease_owner is None and job.attempts == 0
        assert world.models(job_id) == []


class TestSettings:
    def test_heartbeat_must_be_shorter_than_the_lease(self, world):
        settings = world.settings.model_copy(update={"heartbeat_seconds": 5, "lease_seconds": 5})
        with pytest.raises(ValueError, match="heartbeat_seconds"):
            make_executor(settings, world.engine)
