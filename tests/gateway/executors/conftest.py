"""Jobs on a tiny real model: a migrated database with a data source, its training files
and a queued job inserted directly, as the submission API leaves them (with the same
checkpoint policy: every epoch's end, and every CHECKPOINT_MINUTES)."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from sqlalchemy import Engine, text
from sqlmodel import Session, select

from gateway.config import Settings
from gateway.data_sources.models import DataSource
from gateway.files.models import TrainingFile
from gateway.jobs.models import FineTuningJob, JobCheckpoint, JobEvent
from gateway.jobs.submission import checkpoint_policy
from gateway.registry.models import ModelVersion
from trainer.demo_task import write_demo_files
from trainer.fixtures import build_tiny_model
from trainer.hashing import hash_tree, sha256_file
from trainer.spec import EvalSpec, Hyperparameters, TrainSpec

# Tiny ops do not share well between threads on a busy 2-core machine.
torch.set_num_threads(1)

TENANT = "acme"
CHECKPOINT_MODEL = ":ckpt-step-"


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("base") / "tiny-llama"
    build_tiny_model(directory, seed=0)
    return directory


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory) -> tuple[Path, Path]:
    return write_demo_files(tmp_path_factory.mktemp("demo"), n_train=24, n_validation=4, seed=5)


@dataclass
class JobWorld:
    engine: Engine
    settings: Settings
    artifact_dir: Path
    base_dir: Path
    data: tuple[Path, Path]

    def add_job(
        self,
        *,
        spec_overrides: dict[str, Any] | None = None,
        job_overrides: dict[str, Any] | None = None,
        content_sha256: str | None = None,
    ) -> str:
        job_id = f"ftjob-{uuid.uuid4().hex[:24]}"
        train_path, validation_path = self.data
        files = []
        with Session(self.engine) as session:
            if session.get(DataSource, "ds-test") is None:
                session.add(
                    DataSource(
                        id="ds-test",
                        tenant=TENANT,
                        name="invoices",
                        classification="internal",
                        owner="owner-1",
                        retention_days=30,
                        pii_action="redact",
                        status="approved",
                        proposed_by="owner-1",
                        proposed_at="2026-01-01T00:00:00Z",
                    )
                )
                session.flush()
            for path in (train_path, validation_path):
                file_id = f"file-{uuid.uuid4().hex[:24]}"
                digest = sha256_file(path)
                session.add(
                    TrainingFile(
                        id=file_id,
                        tenant=TENANT,
                        data_source_id="ds-test",
                        purpose="fine-tune",
                        filename=path.name,
                        bytes=path.stat().st_size,
                        sha256="0" * 64,
                        status="processed",
                        pii_action="redact",
                        report={},
                        content_sha256=content_sha256 or digest,
                        content_bytes=path.stat().st_size,
                        examples=3,
                        redaction={"replaced": 0},
                        created_at=int(time.time()),
                        created_by="alice",
                    )
                )
                files.append(file_id)
            spec = TrainSpec(
                base_model_dir=str(self.base_dir),
                training_file=str(train_path),
                validation_file=str(validation_path),
                output_dir=str(self.artifact_dir / "jobs" / job_id),
                hyperparameters=Hyperparameters(
                    n_epochs=1, batch_size=4, learning_rate_multiplier=10
                ),
                evaluation=EvalSpec(enabled=False),
                max_seq_len=512,
                micro_batch_tokens=2048,
                seed=3,
            ).to_dict()
            spec.update(checkpoint_policy(self.settings))
            spec.update(spec_overrides or {})
            fields = {
                "id": job_id,
                "tenant": TENANT,
                "created_by": "alice",
                "created_at": int(time.time()),
                "created_ns": time.time_ns(),
                "model": "tiny-llama",
                "base_model": "tiny-llama",
                "training_file": files[0],
                "validation_file": files[1],
                "purpose": "invoice-extraction",
                "suffix": "inv",
                "seed": 3,
                "hyperparameters": {},
                "lora": {},
                "evaluation": {},
                "spec": spec,
                "decisions": [{"gate": "authz", "decision": "allow", "policy_version": "pv-1"}],
                "estimate": {"flops": 1.0e9, "seconds": 5, "parameters": 139_584},
                "estimated_device_seconds": 5.0,
                "status": "queued",
                "executor": "local",
                "fine_tuned_model": f"ft:tiny-llama:{TENANT}:inv:{job_id}",
            }
            fields.update(job_overrides or {})
            session.add(FineTuningJob(**fields))
            session.commit()
        return job_id

    def job(self, job_id: str) -> FineTuningJob:
        with Session(self.engine) as session:
            return session.get(FineTuningJob, job_id)

    def events(self, job_id: str) -> list[JobEvent]:
        with Session(self.engine) as session:
            return list(
                session.exec(
                    select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.seq)
                ).all()
            )

    def checkpoints(self, job_id: str) -> list[JobCheckpoint]:
        with Session(self.engine) as session:
            return list(
                session.exec(
                    select(JobCheckpoint)
                    .where(JobCheckpoint.job_id == job_id)
                    .order_by(JobCheckpoint.step)
                ).all()
            )

    def models(self, job_id: str) -> list[ModelVersion]:
        """The job's own model (not its checkpoints'), when it registered one."""
        return [m for m in self._versions(job_id) if CHECKPOINT_MODEL not in m.id]

    def checkpoint_models(self, job_id: str) -> list[ModelVersion]:
        found = [m for m in self._versions(job_id) if CHECKPOINT_MODEL in m.id]
        return sorted(found, key=lambda m: m.compute["checkpoint"]["step"])

    def _versions(self, job_id: str) -> list[ModelVersion]:
        with Session(self.engine) as session:
            return list(
                session.exec(select(ModelVersion).where(ModelVersion.job_id == job_id)).all()
            )

    def audit(self, resource: str) -> list[tuple[str, str, dict]]:
        """(action, actor, details) of queued and chained events on ``resource``."""
        with self.engine.connect() as connection:
            queued = connection.execute(
                text(
                    "SELECT action, actor, details FROM audit_queue WHERE resource = :r ORDER BY id"
                ),
                {"r": resource},
            ).all()
            chained = connection.execute(
                text(
                    "SELECT action, actor, body FROM audit_events WHERE resource = :r ORDER BY seq"
                ),
                {"r": resource},
            ).all()
        out = [(a, actor, json.loads(d)) for a, actor, d in queued]
        out += [(a, actor, json.loads(bytes(b))["details"]) for a, actor, b in chained]
        return out

    def set_status(self, job_id: str, status: str) -> None:
        with Session(self.engine) as session:
            job = session.get(FineTuningJob, job_id)
            job.status = status
            session.add(job)
            session.commit()

    def set_cancel(self, job_id: str) -> None:
        with Session(self.engine) as session:
            job = session.get(FineTuningJob, job_id)
            job.cancel_requested = True
            session.add(job)
            session.commit()


def registered_by_a_ray_task(world: JobWorld, job_id: str) -> tuple[Any, Any, Path]:
    """The job, after a Ray task ran it: succeeded on its first attempt, one candidate
    model whose recorded adapter hashes are the files on disk. Returns (job, model,
    artifact_dir)."""
    job = world.job(job_id)
    assert job.status == "succeeded", job.error
    assert job.lease_owner.startswith("ray-") and job.attempts == 1
    (model,) = world.models(job_id)
    assert model.id == job.fine_tuned_model and model.status == "candidate"
    artifact_dir = Path(model.artifact_dir)
    weights = artifact_dir / "adapter" / "adapter_model.safetensors"
    assert model.adapter_sha256 == sha256_file(weights)
    assert model.adapter_files == [
        {"relative_path": f.relative_path, "sha256": f.sha256, "bytes": f.bytes}
        for f in hash_tree(artifact_dir)
    ]
    return job, model, artifact_dir


def wait_for(predicate, *, timeout: float, interval: float = 0.1, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture
def world(fresh_engine, tmp_path, tiny_base, demo_data) -> JobWorld:
    engine = fresh_engine()
    settings = Settings(
        database_url=engine.url.render_as_string(hide_password=False),
        env="dev",
        artifact_dir=tmp_path / "artifacts",
        local_workers=0,
        lease_seconds=3.0,
        heartbeat_seconds=0.5,
        max_attempts=2,
    )
    return JobWorld(engine, settings, tmp_path / "artifacts", tiny_base, demo_data)
