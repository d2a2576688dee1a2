"""Suspected mislabels through the real gateway and the real worker on the tiny model: a job
on a file with one planted bad answer lists it (paged), a data owner reviews it (audited),
and a later job on the same file with ``exclude_lines_from`` leaves the confirmed-wrong
line out, with the exclusion in the model's lineage and the evaluation compared."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from gateway.executors.local import work
from tests.conftest import END_TO_END_BACKEND
from tests.gateway.conftest import SOURCE, TINY_BASE, chat_line, good_file, jsonl, upload

PURPOSE = "support-assistant"
PLANTED_LINE = 3
EVALUATION = {
    "enabled": True,
    "max_generation_examples": 2,
    "max_new_tokens": 8,
    "few_shot_examples": 1,
    "max_ood_loss_increase": 10.0,
}


def training_file() -> bytes:
    """Orders answered as JSON; line PLANTED_LINE answered with text unlike every other."""
    lines = []
    for i in range(24):
        answer = json.dumps({"order": str(i), "status": "shipped", "day": str(i % 28 + 1)})
        if i + 1 == PLANTED_LINE:
            answer = "zebra quantum " * 12
        lines.append(chat_line(f"What is the status of order {i}?", answer))
    return jsonl(*lines)


@dataclass
class World:
    client: Any
    people: dict[str, dict]
    source: str
    training: str
    validation: str
    job: dict
    settings: Any

    def submit(self, headers=None, **overrides) -> Any:
        body = {
            "model": TINY_BASE,
            "training_file": self.training,
            "validation_file": self.validation,
            "purpose": PURPOSE,
            "seed": 3,
            "hyperparameters": {"n_epochs": 3, "batch_size": 8, "learning_rate_multiplier": 10},
            "lora": {"r": 4, "alpha": 8},
            "evaluation": EVALUATION,
            **overrides,
        }
        return self.client.post(
            "/v1/fine_tuning/jobs", json=body, headers=headers or self.people["bob"]
        )

    def run(self, job_id: str, worker: str) -> dict:
        assert work(self.settings, worker_id=worker, until_idle=True) == 1
        done = self.client.get(f"/v1/fine_tuning/jobs/{job_id}", headers=self.people["bob"])
        return done.json()

    def suspects(self, job_id: str, **params) -> Any:
        return self.client.get(
            f"/v1/fine_tuning/jobs/{job_id}/suspected_mislabels",
            params=params,
            headers=self.people["bob"],
        )


@pytest.fixture(scope="module")
def backend():  # an end-to-end run: one backend (tests/conftest.py)
    return END_TO_END_BACKEND


@pytest.fixture(scope="module")
def world(databases, backend, tiny_model_root, tmp_path_factory) -> Iterator[World]:
    from fastapi.testclient import TestClient

    from gateway.bootstrap import seed_policy
    from gateway.config import Settings
    from gateway.main import create_app
    from gateway.security import mint_dev_token

    engine = databases.engine(backend)
    seed_policy(engine)
    settings = Settings(
        database_url=engine.url.render_as_string(hide_password=False),
        env="dev",
        artifact_dir=tmp_path_factory.mktemp("mislabels") / "artifacts",
        policy_poll_seconds=0.2,
        ingest_workers=0,
        local_workers=0,
        model_import_roots=[tiny_model_root],
    )
    cast = {
        "dora": ("data-owner", "default"),
        "carol": ("compliance-officer", "default"),
        "bob": ("ml-engineer", "default"),
        "ada": ("admin", "default"),
        "olga": ("admin", "other"),
    }
    people = {
        sub: {
            "Authorization": "Bearer "
            + mint_dev_token(settings, sub=sub, roles=[role], tenant=tenant, ttl=3600)
        }
        for sub, (role, tenant) in cast.items()
    }
    with TestClient(create_app(settings)) as client:
        registered = client.post(
            "/v1/base_models",
            json={
                "name": TINY_BASE,
                "license": "apache-2.0",
                "source": {"directory": str(tiny_model_root / TINY_BASE)},
            },
            headers=people["ada"],
        )
        assert registered.status_code == 201, registered.text
        proposed = client.post("/v1/data_sources", json=SOURCE, headers=people["dora"])
        source = proposed.json()["id"]
        approved = client.post(f"/v1/data_sources/{source}/approve", headers=people["carol"])
        assert approved.status_code == 200, approved.text
        rules = [
            {"ptype": "p", "values": ["user:bob", "default", f"ds:{source}", "train", "allow"]}
        ]
        granted = client.post("/v1/policies/rules", json={"rules": rules}, headers=people["ada"])
        assert granted.status_code == 201, granted.text
        training = upload(client, people["dora"], data_source=source, content=training_file())
        validation = upload(
            client, people["dora"], data_source=source, content=good_file(4, start=900)
        )
        assert training.json()["status"] == validation.json()["status"] == "processed"
        world = World(
            client, people, source, training.json()["id"], validation.json()["id"], {}, settings
        )
        created = world.submit()
        assert created.status_code == 200, created.text
        world.job = world.run(created.json()["id"], "w-first")
        assert world.job["status"] == "succeeded", world.job["error"]
        yield world
    databases.release(engine)


class TestFlagged:
    def test_the_planted_line_is_listed_with_its_label(self, world):
        page = world.suspects(world.job["id"], limit=100)
        assert page.status_code == 200, page.text
        rows = page.json()["data"]
        planted = [row for row in rows if row["line"] == PLANTED_LINE]
        assert planted, rows
        [row] = planted
        assert row["file_id"] == world.training and row["score"] > 3.5
        assert row["reason"] == "loss_outlier" and row["label"].startswith("zebra quantum")
        assert row["review_status"] == "unreviewed" and row["model_answer"] is None
        assert [r["line"] for r in rows] == sorted(r["line"] for r in rows)

    def test_the_count_and_the_cost_are_on_the_job(self, world):
        job = world.job
        figures = job["compute"]["suspected_mislabels"]
        assert job["suspected_mislabels_count"] == figures["flagged"] >= 1
        assert figures["examples_scored"] == 24 and figures["tokens_scored"] > 0
        assert "scoring_seconds" in figures and job["excluded_lines"] is None

    def test_paging_walks_every_line_once(self, world):
        every = world.suspects(world.job["id"], limit=100).json()["data"]
        seen, after = [], None
        while True:
            params = {"limit": 1, **({"after": after} if after else {})}
            page = world.suspects(world.job["id"], **params).json()
            seen.extend(row["id"] for row in page["data"])
            if not page["has_more"]:
                break
            after = page["last_id"]
        assert seen == [row["id"] for row in every]
        bad = world.suspects(world.job["id"], after="sml-0000000000000000")
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_cursor"

    def test_another_tenant_sees_nothing(self, world):
        other = world.client.get(
            f"/v1/fine_tuning/jobs/{world.job['id']}/suspected_mislabels",
            headers=world.people["olga"],
        )
        assert other.status_code == 404


class TestReviewAndExclusion:
    def _planted(self, world) -> dict:
        rows = world.suspects(world.job["id"], limit=100).json()["data"]
        return next(row for row in rows if row["line"] == PLANTED_LINE)

    def _review(self, world, who: str, line_id: str, verdict: str) -> Any:
        return world.client.post(
            f"/v1/fine_tuning/jobs/{world.job['id']}/suspected_mislabels/{line_id}/review",
            json={"verdict": verdict, "reason": "the answer is not an order status"},
            headers=world.people[who],
        )

    def test_only_a_data_owner_reviews_and_it_is_audited(self, world):
        line = self._planted(world)
        refused = self._review(world, "bob", line["id"], "confirmed_wrong")
        assert refused.status_code == 403
        assert refused.json()["error"]["details"]["object"] == f"ds:{world.source}"
        unknown = self._review(world, "dora", "sml-ffffffffffffffff", "confirmed_wrong")
        # An unknown line resolves to ds:*, which the seed's data-owner rule covers.
        assert unknown.status_code == 404
        assert unknown.json()["error"]["code"] == "suspected_mislabel_not_found"
        reviewed = self._review(world, "dora", line["id"], "confirmed_wrong")
        assert reviewed.status_code == 200, reviewed.text
        assert reviewed.json()["review_status"] == "confirmed_wrong"
        assert reviewed.json()["reviewed_by"] == "dora" and reviewed.json()["reviewed_at"]
        [event] = world.client.get(
            "/v1/audit/events",
            params={"action": "mislabel.reviewed"},
            headers=world.people["carol"],
        ).json()["data"]
        assert event["actor"] == "dora" and event["details"]["line"] == PLANTED_LINE
        assert event["details"]["verdict"] == "confirmed_wrong"
        assert "zebra" not in json.dumps(event)  # the label never enters the trail

    def test_exclusion_is_refused_for_another_file_or_tenant(self, world):
        other_file = upload(
            world.client, world.people["dora"], data_source=world.source, content=good_file(12)
        ).json()["id"]
        mismatch = world.submit(training_file=other_file, exclude_lines_from=world.job["id"])
        assert mismatch.status_code == 400
        assert mismatch.json()["error"]["code"] == "exclusion_file_mismatch"
        missing = world.submit(exclude_lines_from="ftjob-0123456789abcdef")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "job_not_found"
        assert missing.json()["error"]["param"] == "exclude_lines_from"

    def test_the_next_job_leaves_the_line_out_with_lineage(self, world):
        line = self._planted(world)
        assert self._review(world, "dora", line["id"], "confirmed_wrong").status_code == 200
        created = world.submit(exclude_lines_from=world.job["id"])
        assert created.status_code == 200, created.text
        assert created.json()["excluded_lines"] == {
            "from_job": world.job["id"],
            "lines": [PLANTED_LINE],
        }
        done = world.run(created.json()["id"], "w-second")
        assert done["status"] == "succeeded", done["error"]
        assert done["compute"]["suspected_mislabels"]["examples_scored"] == 23
        assert PLANTED_LINE not in {
            row["line"] for row in world.suspects(done["id"], limit=100).json()["data"]
        }
        version = _version(world, done["fine_tuned_model"])
        training = next(f for f in version.data_files if f["role"] == "training")
        assert training["excluded_lines"] == [PLANTED_LINE]
        assert training["excluded_lines_from"] == world.job["id"]
        cleaning = version.evaluation["cleaning"]
        assert cleaning["source_job"] == world.job["id"] and cleaning["same_held_out"]
        assert set(cleaning["with_confirmed_wrong"]) == {"exact_match", "token_f1", "loss"}
        assert cleaning["without_confirmed_wrong"]["loss"] is not None
        assert cleaning["with_confirmed_wrong"]["loss"] is not None
        dossier = world.client.get(
            f"/v1/models/{done['fine_tuned_model']}/dossier", headers=world.people["carol"]
        )
        assert dossier.status_code == 200, dossier.text
        section = dossier.json()["suspected_mislabels"]
        assert section["excluded"] == {"from_job": world.job["id"], "lines": [PLANTED_LINE]}
        assert section["cleaning"]["source_job"] == world.job["id"]
        assert section["figures"]["examples_scored"] == 23
        markdown = world.client.get(
            f"/v1/models/{done['fine_tuned_model']}/dossier",
            params={"format": "markdown"},
            headers=world.people["carol"],
        ).text
        assert "## 12. Suspected mislabels" in markdown and "without (this model)" in markdown
        first = world.client.get(
            f"/v1/models/{world.job['fine_tuned_model']}/dossier", headers=world.people["carol"]
        ).json()["suspected_mislabels"]
        assert PLANTED_LINE in {row["line"] for row in first["flagged"]}


def _version(world: World, model_id: str) -> Any:
    from sqlmodel import Session

    from gateway.registry.models import ModelVersion

    with Session(world.client.app.state.gateway.engine) as session:
        version = session.get(ModelVersion, model_id)
        session.expunge(version)
        return version
