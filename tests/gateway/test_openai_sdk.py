"""The official `openai` SDK, unchanged, against a real uvicorn on loopback with a real local
worker and the tiny model: every call its `fine_tuning.jobs` (create, retrieve, list, cancel,
list_events, pause, resume), `fine_tuning.jobs.checkpoints`, `files` and `models` resources
make, paging included (``after``/``limit``, and iterating a page, which pages on by ``after``:
the SDK's auto-paging). One server and one real job run are shared by the module's tests."""

from __future__ import annotations

import csv
import io
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import END_TO_END_BACKEND
from tests.gateway.conftest import SOURCE, TINY_BASE, good_file

PURPOSE = "support-assistant"
TIMEOUT_SECONDS = 300
N_EPOCHS = 2
# 24 examples, 4 a step: 6 steps an epoch, a checkpoint at each epoch's end.
HYPERPARAMETERS = {"n_epochs": N_EPOCHS, "batch_size": 4}
METADATA = {"team": "care", "run": "shared"}
RESULT_HEADER = "step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy"


@dataclass
class World:
    base: str
    headers: dict[str, dict[str, str]]
    source: str
    base_dir: Path
    training_bytes: bytes = b""
    training: Any = None  # openai FileObjects and the shared FineTuningJob, once made
    validation: Any = None
    job: Any = None

    def sdk(self, who: str) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=f"{self.base}/v1",
            api_key=self.headers[who]["Authorization"].removeprefix("Bearer "),
            max_retries=0,
            timeout=60,
        )

    def create(self, who: str = "bob", **overrides) -> openai.types.fine_tuning.FineTuningJob:
        body = {
            "model": TINY_BASE,
            "training_file": self.training.id,
            "validation_file": self.validation.id,
            "hyperparameters": HYPERPARAMETERS,
            "extra_body": {
                "purpose": PURPOSE,
                "lora": {"r": 4, "alpha": 8},
                "evaluation": {"enabled": False},
            },
            **overrides,
        }
        return self.sdk(who).fine_tuning.jobs.create(**body)


@contextmanager
def _served(settings) -> Iterator[str]:
    import uvicorn

    from gateway.main import create_app

    config = uvicorn.Config(
        create_app(settings), host="127.0.0.1", port=0, log_level="warning", lifespan="on"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def _people(settings) -> dict[str, dict[str, str]]:
    from gateway.security import mint_dev_token

    cast = {
        "dora": ("data-owner", "default"),
        "carol": ("compliance-officer", "default"),
        "bob": ("ml-engineer", "default"),
        "eve": ("ml-engineer", "default"),
        "ada": ("admin", "default"),
        "olga": ("ml-engineer", "other"),
    }
    return {
        sub: {
            "Authorization": "Bearer "
            + mint_dev_token(settings, sub=sub, roles=[role], tenant=tenant, ttl=3600)
        }
        for sub, (role, tenant) in cast.items()
    }


def _governed_source(http: httpx.Client, people: dict, base_dir: Path) -> str:
    """The tiny base model registered, an approved source, and bob allowed to read,
    upload to and train on it."""
    registered = http.post(
        "/v1/base_models",
        json={"name": TINY_BASE, "license": "apache-2.0", "source": {"directory": str(base_dir)}},
        headers=people["ada"],
    )
    assert registered.status_code == 201, registered.text
    proposed = http.post(
        "/v1/data_sources", json={**SOURCE, "min_examples": 10}, headers=people["dora"]
    )
    assert proposed.status_code == 201, proposed.text
    source = proposed.json()["id"]
    approved = http.post(f"/v1/data_sources/{source}/approve", headers=people["carol"])
    assert approved.status_code == 200, approved.text
    rules = [
        {"ptype": "p", "values": ["user:bob", "default", f"ds:{source}", act, "allow"]}
        for act in ("read", "upload", "train")
    ]
    granted = http.post("/v1/policies/rules", json={"rules": rules}, headers=people["ada"])
    assert granted.status_code == 201, granted.text
    return source


@pytest.fixture(scope="module")
def backend():  # an end-to-end run: one backend (tests/conftest.py)
    return END_TO_END_BACKEND


@pytest.fixture(scope="module")
def world(databases, backend, tiny_model_root, tmp_path_factory) -> Iterator[World]:
    from gateway.bootstrap import seed_policy
    from gateway.config import Settings

    engine = databases.engine(backend)
    seed_policy(engine)
    settings = Settings(
        database_url=engine.url.render_as_string(hide_password=False),
        env="dev",
        artifact_dir=tmp_path_factory.mktemp("sdk") / "artifacts",
        policy_poll_seconds=0.2,
        ingest_workers=0,
        local_workers=1,
        heartbeat_seconds=2.0,
        lease_seconds=30.0,
        model_import_roots=[tiny_model_root],
    )
    people = _people(settings)
    with _served(settings) as base, httpx.Client(base_url=base, timeout=60) as http:
        source = _governed_source(http, people, tiny_model_root / TINY_BASE)
        world = World(base, people, source, tiny_model_root / TINY_BASE)
        bob = world.sdk("bob")
        world.training_bytes = good_file(24)
        world.training = bob.files.create(
            file=("train.jsonl", world.training_bytes),
            purpose="fine-tune",
            extra_body={"data_source": source},
        )
        world.validation = bob.files.create(
            file=("valid.jsonl", good_file(5, start=1000)),
            purpose="fine-tune",
            extra_body={"data_source": source},
        )
        created = world.create(suffix="sdk", seed=3, metadata=METADATA)
        assert created.status == "queued" and created.training_file == world.training.id
        world.job = _finished(bob, created)
        assert world.job.status == "succeeded", world.job.error
        yield world
    databases.release(engine)


def _finished(sdk: openai.OpenAI, job):
    deadline = time.monotonic() + TIMEOUT_SECONDS
    while job.status not in ("succeeded", "failed", "cancelled"):
        assert time.monotonic() < deadline, f"job still {job.status}"
        time.sleep(0.5)
        job = sdk.fine_tuning.jobs.retrieve(job.id)
    return job


class TestJobs:
    def test_the_finished_job_is_openais_object(self, world):
        job = world.sdk("bob").fine_tuning.jobs.retrieve(world.job.id)
        assert job.object == "fine_tuning.job" and job.status == "succeeded"
        assert job.fine_tuned_model.startswith(f"ft:{TINY_BASE}:default:sdk:")
        assert job.seed == 3 and job.user_provided_suffix == "sdk" and job.metadata == METADATA
        assert job.error is None and job.finished_at and job.estimated_finish is None
        assert job.method.type == "supervised" and job.hyperparameters.n_epochs == N_EPOCHS
        assert job.integrations is None

    def test_trained_tokens_are_every_token_times_the_epochs(self, world, tmp_path):
        from trainer.base_models import load_base_model
        from trainer.data import tokenize_file
        from trainer.spec import TrainSpec

        path = tmp_path / "train.jsonl"
        path.write_bytes(world.training_bytes)
        tokenizer = load_base_model(world.base_dir).tokenizer
        examples = tokenize_file(path, tokenizer, max_seq_len=TrainSpec.max_seq_len).examples
        job = world.job
        assert job.trained_tokens == N_EPOCHS * sum(e.n_tokens for e in examples)
        target = job.model_extra["trained_target_tokens"]
        assert target == N_EPOCHS * sum(e.n_target_tokens for e in examples)
        assert 0 < target < job.trained_tokens

    def test_a_failed_job_says_why_with_a_stable_code(self, world):
        from tests.gateway.conftest import chat_line, jsonl

        bob = world.sdk("bob")
        too_long = jsonl(
            *(
                chat_line(f"Spell order {i}", " ".join(f"o{i}w{j}" for j in range(1500)))
                for i in range(12)
            )
        )
        uploaded = bob.files.create(
            file=("long.jsonl", too_long),
            purpose="fine-tune",
            extra_body={"data_source": world.source},
        )
        assert uploaded.status == "processed", uploaded.status_details
        job = _finished(bob, world.create(training_file=uploaded.id, validation_file=None))
        assert job.status == "failed" and job.fine_tuned_model is None
        assert job.error.code == "invalid_training_file", job.error
        assert "max_seq_len" in job.error.message
        assert job.result_files == [] and job.estimated_finish is None

    def test_list_pages_with_after_and_limit_and_filters_on_metadata(self, world):
        bob = world.sdk("bob")
        extra = [world.create(metadata={"team": "care"}) for _ in range(2)]
        for job in extra:
            bob.fine_tuning.jobs.cancel(job.id)
        first = bob.fine_tuning.jobs.list(limit=1)
        assert [j.id for j in first.data] == [extra[-1].id] and first.has_more
        after = bob.fine_tuning.jobs.list(limit=1, after=extra[-1].id)
        assert [j.id for j in after.data] == [extra[0].id]
        every = [j.id for j in bob.fine_tuning.jobs.list(limit=1)]
        assert every[:2] == [extra[1].id, extra[0].id] and world.job.id in every
        assert len(every) == len(set(every))  # newest first, each job once, page after page
        shared = bob.fine_tuning.jobs.list(metadata={"run": "shared"})
        assert [j.id for j in shared] == [world.job.id]
        care = bob.fine_tuning.jobs.list(metadata={"team": "care"}, limit=100)
        assert {j.id for j in care} >= {world.job.id, *(j.id for j in extra)}

    def test_cancel_and_the_409s_of_cancel_pause_and_resume(self, world):
        bob = world.sdk("bob")
        job = world.create()
        cancelled = bob.fine_tuning.jobs.cancel(job.id)
        assert cancelled.id == job.id
        assert _finished(bob, cancelled).status == "cancelled"
        with pytest.raises(openai.ConflictError) as again:
            bob.fine_tuning.jobs.cancel(job.id)
        assert again.value.code == "job_not_cancellable"
        with pytest.raises(openai.ConflictError) as pause:
            bob.fine_tuning.jobs.pause(world.job.id)
        assert pause.value.code == "job_not_running"
        with pytest.raises(openai.ConflictError) as resume:
            bob.fine_tuning.jobs.resume(world.job.id)
        assert resume.value.code == "job_not_paused"

    def test_invalid_parameters_are_bad_requests(self, world):
        bob = world.sdk("bob")
        with pytest.raises(openai.BadRequestError) as epochs:
            world.create(hyperparameters={"n_epochs": 0})
        assert epochs.value.code == "invalid_request" and epochs.value.type == (
            "invalid_request_error"
        )
        assert epochs.value.param == "hyperparameters.n_epochs"
        assert "an integer ≥ 1 or 'auto'" in epochs.value.message
        with pytest.raises(openai.BadRequestError) as wandb:
            world.create(integrations=[{"type": "wandb", "wandb": {"project": "care"}}])
        assert wandb.value.code == "integration_unavailable"
        assert wandb.value.param == "integrations"
        with pytest.raises(openai.BadRequestError) as metadata:
            world.create(metadata={f"k{i}": "v" for i in range(17)})
        assert metadata.value.param == "metadata"
        with pytest.raises(openai.NotFoundError):
            bob.fine_tuning.jobs.retrieve("ftjob-" + "0" * 16)

    def test_events_page_newest_first(self, world):
        jobs = world.sdk("bob").fine_tuning.jobs
        every = list(jobs.list_events(world.job.id, limit=3))  # iterating pages on, by `after`
        pages = list(jobs.list_events(world.job.id, limit=3).iter_pages())
        assert len(pages) == -(-len(every) // 3) and not pages[-1].has_more
        assert every and all(e.object == "fine_tuning.job.event" for e in every)
        seqs = [int(e.id.removeprefix("ftevent-")) for e in every]
        assert seqs == sorted(seqs, reverse=True) and len(set(seqs)) == len(seqs)
        first = jobs.list_events(world.job.id, limit=3)
        assert [e.id for e in first.data] == [e.id for e in every[:3]] and first.has_more
        after = jobs.list_events(world.job.id, limit=3, after=every[2].id)
        assert [e.id for e in after.data] == [e.id for e in every[3:6]]
        steps = [e.data["step"] for e in every if e.type == "metrics"]
        assert max(steps) == N_EPOCHS * 6

    def test_checkpoints_page_and_are_models(self, world):
        bob = world.sdk("bob")
        checkpoints = bob.fine_tuning.jobs.checkpoints
        first = checkpoints.list(world.job.id, limit=1)
        assert len(first.data) == 1 and first.has_more
        every = list(checkpoints.list(world.job.id, limit=1))
        steps = [c.step_number for c in every]
        assert steps == sorted(set(steps), reverse=True) and {6, 12} <= set(steps)
        after = checkpoints.list(world.job.id, after=every[0].id)
        assert [c.id for c in after] == [c.id for c in every[1:]]
        newest = every[0]
        assert newest.object == "fine_tuning.job.checkpoint"
        assert newest.fine_tuned_model_checkpoint.endswith(":ckpt-step-12")
        assert newest.metrics.step == 12 and newest.metrics.train_loss is not None
        model = bob.models.retrieve(newest.fine_tuned_model_checkpoint)
        assert model.id == newest.fine_tuned_model_checkpoint


class TestResultFile:
    def test_the_metrics_csv_is_a_file_in_openais_columns(self, world):
        bob = world.sdk("bob")
        [file_id] = world.job.result_files
        file = bob.files.retrieve(file_id)
        assert file.purpose == "fine-tune-results" and file.filename == "step_metrics.csv"
        text = bob.files.content(file_id).text
        assert text.splitlines()[0] == RESULT_HEADER
        rows = list(csv.DictReader(io.StringIO(text)))
        assert [int(row["step"]) for row in rows] == list(range(1, N_EPOCHS * 6 + 1))
        assert all(float(row["train_loss"]) > 0 for row in rows)
        assert any(row["valid_loss"] for row in rows)
        listed = bob.files.list(purpose="fine-tune-results")
        assert file_id in [f.id for f in listed]

    def test_whoever_may_read_the_job_may_read_it(self, world):
        [file_id] = world.job.result_files
        # eve may read the tenant's jobs but not the data source; dora the reverse.
        assert world.sdk("eve").files.content(file_id).text.startswith("step,")
        with pytest.raises(openai.PermissionDeniedError):
            world.sdk("eve").files.retrieve(world.training.id)
        with pytest.raises(openai.PermissionDeniedError):
            world.sdk("dora").files.content(file_id)
        with pytest.raises((openai.PermissionDeniedError, openai.NotFoundError)):
            world.sdk("olga").files.content(file_id)


class TestFiles:
    def test_retrieve_list_page_content_and_delete(self, world):
        bob = world.sdk("bob")
        file = bob.files.retrieve(world.training.id)
        assert file.id == world.training.id and file.status == "processed"
        assert bob.files.content(world.training.id).content == world.training_bytes
        spare = bob.files.create(
            file=("spare.jsonl", good_file(12, start=5000)),
            purpose="fine-tune",
            extra_body={"data_source": world.source},
        )
        first = bob.files.list(limit=1)
        assert [f.id for f in first.data] == [spare.id] and first.has_more
        after = bob.files.list(limit=1, after=spare.id)
        assert len(after.data) == 1 and after.data[0].id != spare.id
        every = [f.id for f in bob.files.list(limit=1)]
        assert {spare.id, world.training.id, world.validation.id} <= set(every)
        assert len(every) == len(set(every))
        deleted = bob.files.delete(spare.id)
        assert (deleted.id, deleted.object, deleted.deleted) == (spare.id, "file", True)
        assert bob.files.retrieve(spare.id).status == "deleted"
        with pytest.raises(openai.APIStatusError) as gone:
            bob.files.content(spare.id)
        assert gone.value.status_code == 410


class TestModels:
    def test_list_retrieve_continue_and_delete(self, world):
        bob, ada = world.sdk("bob"), world.sdk("ada")
        listed = [m.id for m in bob.models.list()]
        assert world.job.fine_tuned_model in listed
        model = bob.models.retrieve(world.job.fine_tuned_model)
        assert model.id == world.job.fine_tuned_model and model.object == "model"
        # Iterative improvement: the next version continues from this one's adapter.
        child = _finished(
            bob,
            world.create(
                model=world.job.fine_tuned_model,
                suffix="v2",
                hyperparameters={"n_epochs": 1, "batch_size": 4},
                extra_body={"purpose": PURPOSE, "evaluation": {"enabled": False}},
            ),
        )
        assert child.status == "succeeded", child.error
        lineage = bob.get(f"/models/{child.fine_tuned_model}/lineage", cast_to=object)
        assert world.job.fine_tuned_model in str(lineage)
        with pytest.raises(openai.PermissionDeniedError):
            bob.models.delete(child.fine_tuned_model)
        deleted = ada.models.delete(child.fine_tuned_model)
        assert (deleted.id, deleted.object, deleted.deleted) == (
            child.fine_tuned_model,
            "model",
            True,
        )
