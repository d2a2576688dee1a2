"""Running a claimed job in-process: registration, tampering, cancellation, failures."""

from __future__ import annotations

import threading
from pathlib import Path

from gateway.executors.completion import model_version_id
from gateway.executors.leases import claim
from gateway.executors.local import work
from gateway.executors.run import run_job
from gateway.jobs.models import FineTuningJob
from tests.gateway.executors.conftest import TENANT, wait_for
from trainer import recipe
from trainer.hashing import hash_tree, sha256_file

WORKER = "worker-test"
_LONG = {"hyperparameters": {"n_epochs": 5, "batch_size": 1, "learning_rate_multiplier": 1}}


def _run_one(world, job_id: str) -> str:
    claimed = claim(world.engine, worker_id=WORKER, lease_seconds=world.settings.lease_seconds)
    assert claimed is not None and claimed.job_id == job_id
    return run_job(world.settings, job_id, WORKER, engine=world.engine)


class TestSuccess:
    def test_registers_a_candidate_whose_hashes_match_the_disk(self, world):
        job_id = world.add_job(spec_overrides={"checkpoint_every_steps": 2})
        assert _run_one(world, job_id) == "succeeded"

        job = world.job(job_id)
        assert job.status == "succeeded" and job.error is None
        assert job.fine_tuned_model == f"ft:tiny-llama:{TENANT}:inv:{job_id}"
        assert job.trained_tokens > 0 and job.finished_at and job.lease_expires_at is None
        assert job.compute["device"] == "cpu" and job.compute["attempts"] == 1
        (model,) = world.models(job_id)
        assert model.id == job.fine_tuned_model and model.status == "candidate"
        artifact_dir = Path(model.artifact_dir)
        weights = artifact_dir / "adapter" / "adapter_model.safetensors"
        assert model.adapter_sha256 == sha256_file(weights)
        on_disk = [
            {"relative_path": f.relative_path, "sha256": f.sha256, "bytes": f.bytes}
            for f in hash_tree(artifact_dir)
        ]
        assert model.adapter_files == on_disk
        assert [f["role"] for f in model.data_files] == ["training", "validation"]
        assert model.data_files[0]["file_id"] == job.training_file
        assert model.data_files[0]["data_source"] == "ds-test"
        assert model.decisions == job.decisions and model.seed == 3
        assert model.hyperparameters["batch_size"] == 4
        assert model.hyperparameters["lora"]["r"] == 16
        assert {"torch", "transformers", "peft"} <= model.library_versions.keys()
        assert model.compute["trained_tokens"] == job.trained_tokens
        # Recorded the way it was estimated: 6 x parameters x tokens processed.
        parameters = job.estimate["parameters"]
        assert model.compute["flops"] == 6 * parameters * model.compute["processed_tokens"]
        assert model.compute["device_hours"] > 0 and model.compute["flops_per_second"] > 0
        assert model.verdict is None  # evaluation disabled in this spec

        actions = [(action, actor) for action, actor, _ in world.audit(f"job:{job_id}")]
        assert ("job.succeeded", "system:worker") in actions
        ((action, _, details),) = world.audit(f"model:{model.id}")
        assert action == "model.registered"
        assert details["adapter_sha256"] == model.adapter_sha256

    def test_events_and_checkpoints_are_recorded(self, world):
        job_id = world.add_job(spec_overrides={"checkpoint_every_steps": 2})
        assert _run_one(world, job_id) == "succeeded"
        events = world.events(job_id)
        metrics = [e for e in events if e.type == "metrics" and "train_loss" in e.data]
        total = metrics[0].data["total_steps"]
        assert [e.data["step"] for e in metrics] == list(range(1, total + 1))
        assert all(e.level in ("info", "warn", "error") for e in events)
        assert events[0].message == "Fine-tuning job started"
        assert events[-1].message == "The job has successfully completed"
        assert any(e.type == "metrics" and "valid_loss" in e.data for e in events)
        checkpoints = world.checkpoints(job_id)
        assert [c.step for c in checkpoints] == list(range(2, total + 1, 2))
        for checkpoint in checkpoints:
            assert checkpoint.id.startswith("ftckpt-")
            assert checkpoint.metrics["train_loss"] is not None
            weights = Path(checkpoint.path) / "adapter_model.safetensors"
            assert sha256_file(weights) == checkpoint.adapter_sha256

    def test_work_until_idle_runs_the_queue(self, world):
        first, second = world.add_job(), world.add_job()
        assert work(world.settings, worker_id=WORKER, engine=world.engine, until_idle=True) == 2
        assert world.job(first).status == world.job(second).status == "succeeded"


class TestCheckpointModels:
    def test_the_kept_checkpoints_become_models_of_their_own(self, world):
        job_id = world.add_job(spec_overrides={"checkpoint_every_steps": 1})
        assert _run_one(world, job_id) == "succeeded"
        job, (model,) = world.job(job_id), world.models(job_id)
        # Six steps, a checkpoint each; the newest three are kept, rows and directories.
        kept = world.checkpoints(job_id)
        assert [c.step for c in kept] == [4, 5, 6]
        directory = Path(kept[0].path).parent
        assert sorted(p.name for p in directory.iterdir()) == [
            "step-000004",
            "step-000005",
            "step-000006",
        ]
        versions = world.checkpoint_models(job_id)
        assert [v.id for v in versions] == [f"{model.id}:ckpt-step-{c.step}" for c in kept]
        for version, checkpoint in zip(versions, kept, strict=True):
            assert version.status == "candidate" and version.verdict is None
            assert version.adapter_sha256 == checkpoint.adapter_sha256
            assert version.artifact_dir == checkpoint.path
            assert [f["relative_path"] for f in version.adapter_files] == [
                "adapter_config.json",
                "adapter_model.safetensors",
            ]
            assert version.compute["checkpoint"]["step"] == checkpoint.step
            assert version.compute["checkpoint"]["id"] == checkpoint.id
            # The job's lineage: the same data, decisions, base manifest and parent.
            assert version.data_files == model.data_files
            assert version.decisions == model.decisions == job.decisions
            assert version.base_manifest_sha256 == model.base_manifest_sha256
            ((action, _, details),) = world.audit(f"model:{version.id}")
            assert action == "model.registered" and details["checkpoint_step"] == checkpoint.step
        assert versions[-1].compute["checkpoint"]["metrics"]["valid_loss"] is not None

    def test_a_checkpoint_that_changed_is_not_registered(self, world, monkeypatch):
        real_train = recipe.train

        def train_then_tamper(spec, **kwargs):
            result = real_train(spec, **kwargs)
            weights = Path(result.checkpoints[0].path) / "adapter_model.safetensors"
            with weights.open("ab") as handle:
                handle.write(b"\0")
            return result

        monkeypatch.setattr(recipe, "train", train_then_tamper)
        job_id = world.add_job(spec_overrides={"checkpoint_every_steps": 3})
        assert _run_one(world, job_id) == "succeeded"
        assert [v.compute["checkpoint"]["step"] for v in world.checkpoint_models(job_id)] == [6]
        assert any("step 3 not registered" in e.message for e in world.events(job_id))


class TestPause:
    def test_a_paused_job_frees_its_worker_and_resumes_from_its_checkpoint(self, world):
        job_id = world.add_job(spec_overrides=_LONG)
        outcome: list[str] = []
        thread = threading.Thread(target=lambda: outcome.append(_run_one(world, job_id)))
        thread.start()
        wait_for(
            lambda: any(e.type == "metrics" for e in world.events(job_id)),
            timeout=60,
            what="a metrics event",
        )
        world.set_status(job_id, "pausing")
        thread.join(60)
        assert outcome == ["paused"]
        job = world.job(job_id)
        assert job.status == "paused" and job.lease_owner is None and job.attempts == 0
        (checkpoint,) = [
            c for c in world.checkpoints(job_id) if c.path == job.spec.get("resume_from_checkpoint")
        ]
        paused_at = next(e for e in world.events(job_id) if e.message.startswith("Training paused"))
        assert paused_at.data["step"] == checkpoint.step > 0
        (paused,) = [d for a, _, d in world.audit(f"job:{job_id}") if a == "job.paused"]
        assert paused["checkpoint_step"] == checkpoint.step and not paused["worker_lost"]

        world.set_status(job_id, "queued")  # what a resume does (gateway.jobs.service)
        assert work(world.settings, worker_id=WORKER, engine=world.engine, until_idle=True) == 1
        job = world.job(job_id)
        assert job.status == "succeeded" and job.attempts == 1 and job.compute["resumed"]
        steps = [
            e.data["step"]
            for e in world.events(job_id)
            if e.type == "metrics" and "train_loss" in e.data
        ]
        assert steps == list(range(1, len(steps) + 1))  # each step once: none done twice
        assert any(
            e.message == f"Training resumed at step {checkpoint.step} of {len(steps)} steps on cpu"
            for e in world.events(job_id)
        )


class TestArtifactIntegrity:
    def test_tampered_adapter_fails_the_job_and_registers_nothing(self, world, monkeypatch):
        real_train = recipe.train

        def train_then_tamper(spec, **kwargs):
            result = real_train(spec, **kwargs)
            weights = Path(result.artifact_dir) / "adapter" / "adapter_model.safetensors"
            with weights.open("ab") as handle:
                handle.write(b"\0")
            return result

        monkeypatch.setattr(recipe, "train", train_then_tamper)
        job_id = world.add_job()
        assert _run_one(world, job_id) == "failed"
        job = world.job(job_id)
        assert job.status == "failed" and job.error["code"] == "artifact_hash_mismatch"
        assert "adapter/adapter_model.safetensors" in job.error["message"]
        assert job.fine_tuned_model == f"ft:tiny-llama:{TENANT}:inv:{job_id}"
        assert world.models(job_id) == []
        failed = [d for a, _, d in world.audit(f"job:{job_id}") if a == "job.failed"]
        assert failed and failed[0]["code"] == "artifact_hash_mismatch"

    def test_data_that_is_not_the_stored_content_fails_the_job(self, world):
        job_id = world.add_job(content_sha256="f" * 64)
        assert _run_one(world, job_id) == "failed"
        assert world.job(job_id).error["code"] == "training_data_mismatch"
        assert world.models(job_id) == []


class TestCancelAndFailure:
    def test_cancel_mid_run(self, world):
        job_id = world.add_job(
            spec_overrides={
                "hyperparameters": {"n_epochs": 50, "batch_size": 1, "learning_rate_multiplier": 1}
            }
        )
        outcome: list[str] = []
        thread = threading.Thread(target=lambda: outcome.append(_run_one(world, job_id)))
        thread.start()
        wait_for(
            lambda: any(e.type == "metrics" for e in world.events(job_id)),
            timeout=60,
            what="a metrics event",
        )
        world.set_cancel(job_id)
        thread.join(30)
        assert outcome == ["cancelled"]
        job = world.job(job_id)
        assert job.status == "cancelled" and job.finished_at
        assert world.models(job_id) == []
        assert not (Path(job.spec["output_dir"]) / "model").exists()
        assert "job.cancelled" in [a for a, _, _ in world.audit(f"job:{job_id}")]

    def test_queued_job_cancelled_before_a_worker_claims_it(self, world):
        job_id = world.add_job(job_overrides={"cancel_requested": True})
        assert claim(world.engine, worker_id=WORKER, lease_seconds=3) is None
        assert world.job(job_id).status == "cancelled"

    def test_invalid_spec_fails_clearly(self, world):
        job_id = world.add_job(spec_overrides={"lr_scheduler": "exponential"})
        assert _run_one(world, job_id) == "failed"
        error = world.job(job_id).error
        assert error["code"] == "invalid_spec" and "lr_scheduler" in error["message"]

    def test_bad_base_model_fails_with_a_code(self, world, tmp_path):
        job_id = world.add_job(spec_overrides={"base_model_dir": str(tmp_path / "missing")})
        assert _run_one(world, job_id) == "failed"
        job = world.job(job_id)
        assert job.error["code"] in ("base_model_invalid", "training_error")
        assert world.models(job_id) == []

    def test_a_job_claimed_by_another_worker_is_not_run(self, world):
        job_id = world.add_job()
        claim(world.engine, worker_id="someone-else", lease_seconds=30)
        assert run_job(world.settings, job_id, WORKER, engine=world.engine) == "lease_lost"
        assert world.job(job_id).lease_owner == "someone-else"


class TestModelId:
    def test_long_names_keep_the_job_id(self):
        job = FineTuningJob(
            id="ftjob-" + "a" * 24,
            tenant="t" * 64,
            base_model="b" * 64,
            suffix="s" * 64,
            fine_tuned_model=None,
        )
        name = model_version_id(job)
        assert len(name) <= 122 and name.endswith(":" + job.id) and name.startswith("ft:")

    def test_without_suffix(self):
        job = FineTuningJob(id="ftjob-1", tenant="acme", base_model="smol", suffix=None)
        assert model_version_id(job) == "ft:smol:acme:tuned:ftjob-1"
