"""A tiny real model, trained and evaluated once per module by a real job run (the
executors' JobWorld, with evaluation on), and released: copies of its version put in
production, each with its own adapter directory, so a test can swap in a worse adapter
without touching the others'."""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
import time
import uuid
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from sqlmodel import Session

from gateway.bootstrap import seed_policy
from gateway.config import Settings
from gateway.executors.leases import claim
from gateway.executors.run import run_job
from gateway.registry.models import ModelVersion
from tests.gateway.executors.conftest import TENANT, JobWorld, demo_data, tiny_base  # noqa: F401
from trainer.hashing import hash_tree
from trainer.spec import EvalSpec

WEIGHTS = "adapter/adapter_model.safetensors"
# Long and steep enough for the tiny model to learn some of the answers' words.
TRAINING = {
    "hyperparameters": {"n_epochs": 8, "batch_size": 4, "learning_rate_multiplier": 30},
}
EVALUATION = dataclasses.asdict(
    EvalSpec(
        enabled=True,
        max_generation_examples=3,
        few_shot_examples=1,
        max_new_tokens=12,
        generation_batch_size=4,
        ood_max_tokens=256,
    )
)


@pytest.fixture(scope="module")
def world(databases, backend, tmp_path_factory, tiny_base, demo_data) -> JobWorld:  # noqa: F811
    engine = databases.engine(backend)
    seed_policy(engine)
    artifacts = tmp_path_factory.mktemp("reeval") / "artifacts"
    settings = Settings(
        database_url=engine.url.render_as_string(hide_password=False),
        env="dev",
        artifact_dir=artifacts,
        local_workers=0,
        ingest_workers=0,
        reevaluation_worker=False,  # the tests run each step themselves
        audit_checkpoint_every=50,
        policy_poll_seconds=0.2,
    )
    yield JobWorld(engine, settings, artifacts, tiny_base, demo_data)
    databases.release(engine)


@pytest.fixture(scope="module")
def trained(world) -> ModelVersion:
    """A real job (training, then the trainer's evaluation against its baselines) and the
    candidate it registered."""
    job_id = world.add_job(spec_overrides={"evaluation": EVALUATION, **TRAINING})
    claimed = claim(world.engine, worker_id="w-reeval", lease_seconds=60)
    assert claimed is not None and claimed.job_id == job_id
    assert run_job(world.settings, job_id, "w-reeval", engine=world.engine) == "succeeded"
    (model,) = world.models(job_id)
    assert model.evaluation is not None and "systems" in model.evaluation
    return model


def degrade(weights: Path) -> None:
    """Re-initialise the LoRA weights as peft does (A at random, B zero): the adapter
    forgets what training taught it."""
    tensors = load_file(str(weights))
    generator = torch.Generator().manual_seed(7)
    fresh = {
        name: torch.zeros_like(tensor)
        if "lora_B" in name
        else (0.02 * torch.randn(tensor.shape, generator=generator)).to(tensor.dtype)
        for name, tensor in tensors.items()
    }
    save_file(fresh, str(weights))


@pytest.fixture
def release(world, trained):
    """release(suffix, worse=False) -> a production copy of the trained version (its adapter
    copied to a directory of its own; re-initialised when ``worse``, and its hash registered
    again as it now is)."""

    def make(suffix: str, *, worse: bool = False, promoted_at: int | None = None) -> str:
        directory = world.artifact_dir / "released" / uuid.uuid4().hex
        shutil.copytree(trained.artifact_dir, directory)
        if worse:
            degrade(directory / WEIGHTS)
        files = [
            {"relative_path": f.relative_path, "sha256": f.sha256, "bytes": f.bytes}
            for f in hash_tree(directory)
        ]
        model_id = f"ft:tiny-llama:{TENANT}:{suffix}:{trained.job_id}"
        values = trained.model_dump()
        values.update(
            id=model_id,
            status="production",
            promoted_by="carol",
            promoted_at=promoted_at or int(time.time()),
            artifact_dir=str(directory),
            adapter_files=files,
            adapter_sha256=hashlib.sha256((directory / WEIGHTS).read_bytes()).hexdigest(),
            flags=[],
            cleared_flags=[],
        )
        with Session(world.engine) as session:
            session.add(ModelVersion(**values))
            session.commit()
        return model_id

    return make


def model_row(world, model_id: str) -> ModelVersion:
    with Session(world.engine) as session:
        return session.get(ModelVersion, model_id)
