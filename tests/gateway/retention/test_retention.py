"""Retention, enforced (issue 16 §3): the sweep deletes content past a source's
retention_days keeping hashes and lineage, warns the owner before, waits for a legal hold
to be released and for a job that reads the file to end. Time is passed as `now=`."""

from __future__ import annotations

import time

import pytest
from pydantic import ValidationError
from sqlmodel import Session

from gateway.config import Settings
from gateway.console.home import waiting_for
from gateway.files.models import TrainingFile
from gateway.jobs.models import FineTuningJob
from gateway.retention.runner import RetentionRunner
from gateway.retention.service import DAY
from gateway.security import Principal
from tests.gateway.conftest import good_file, upload
from tests.gateway.console.conftest import sign_in  # noqa: F401 (fixture)
from tests.gateway.registry.factories import _with_required

RETENTION = 30
HOLD = "/v1/data_sources/{}/legal_hold"


@pytest.fixture
def gateway_settings(gateway_settings):
    # the background sweep stays off: each test runs it with the time it wants
    return gateway_settings.model_copy(update={"retention_worker": False})


@pytest.fixture
def state(client):
    return client.app.state.gateway


@pytest.fixture
def sweep(state):
    runner = RetentionRunner(state.engine, state.settings, notify=state.notify_sequencer)
    return runner.tick


@pytest.fixture
def stored(client, people, approved_source):
    source = approved_source(retention_days=RETENTION)
    file = upload(client, people["dora"], data_source=source["id"], content=good_file(3)).json()
    assert file["status"] == "processed"
    return {"source": source, "file": file, "uploaded": file["created_at"]}


def _events(client, people, action):
    response = client.get("/v1/audit/events", params={"action": action}, headers=people["carol"])
    assert response.status_code == 200, response.text
    return response.json()["data"]


def _content(client, people, file_id):
    return client.get(f"/v1/files/{file_id}/content", headers=people["dora"])


class TestSweep:
    def test_nothing_happens_before_the_warning_window(self, stored, sweep):
        result = sweep(now=stored["uploaded"] + (RETENTION - 8) * DAY)
        assert result.warned == result.deleted == []

    def test_warns_the_owner_once_then_deletes_keeping_hashes(
        self, client, people, stored, sweep, state
    ):
        file_id = stored["file"]["id"]
        warned = sweep(now=stored["uploaded"] + (RETENTION - 7) * DAY)
        assert warned.warned == [file_id] and warned.deleted == []
        assert sweep(now=stored["uploaded"] + (RETENTION - 6) * DAY).warned == []  # once
        [event] = _events(client, people, "retention.warning")
        assert event["details"]["file_id"] == file_id
        assert event["details"]["owner"] == "dora"
        listed = client.get("/v1/retention/warnings", headers=people["dora"]).json()["data"]
        assert [item["file_id"] for item in listed] == [file_id]
        assert client.get("/v1/retention/warnings", headers=people["carol"]).json()["data"] == []
        with Session(state.engine) as session:
            panels = waiting_for(
                session, state=state, principal=Principal("dora", "default", ("data-owner",))
            )
        [panel] = [p for p in panels if p.title.startswith("Files due for deletion")]
        assert panel.count == 1 and file_id in panel.items[0][0]

        assert _content(client, people, file_id).status_code == 200
        deleted = sweep(now=stored["uploaded"] + RETENTION * DAY)
        assert deleted.deleted == [file_id]
        after = client.get(f"/v1/files/{file_id}", headers=people["dora"]).json()
        assert after["status"] == "deleted"
        assert after["sha256"] == stored["file"]["sha256"]
        assert after["content_sha256"] == stored["file"]["content_sha256"]
        assert _content(client, people, file_id).status_code == 410
        [event] = _events(client, people, "retention.content_deleted")
        assert event["actor"] == "system:retention"
        assert event["details"]["content_sha256"] == stored["file"]["content_sha256"]
        assert client.get("/v1/retention/warnings", headers=people["dora"]).json()["data"] == []
        assert sweep(now=stored["uploaded"] + 2 * RETENTION * DAY).deleted == []

    def test_a_reupload_of_the_same_bytes_restarts_the_clock(
        self, client, people, stored, sweep, state
    ):
        # the same content uploaded again is one stored content: it is due with its newest
        first = stored["file"]["id"]
        with Session(state.engine) as session:
            row = session.get(TrainingFile, first)
            row.created_at -= 10 * DAY
            session.add(row)
            session.commit()
            uploaded = row.created_at
        again = upload(
            client, people["dora"], data_source=stored["source"]["id"], content=good_file(3)
        ).json()
        assert again["content_sha256"] == stored["file"]["content_sha256"]
        assert sweep(now=uploaded + RETENTION * DAY).deleted == []
        deleted = sweep(now=again["created_at"] + RETENTION * DAY).deleted
        assert sorted(deleted) == sorted([first, again["id"]])


class TestLegalHold:
    def test_a_hold_suspends_deletion_until_released(self, client, people, stored, sweep):
        source_id, file_id = stored["source"]["id"], stored["file"]["id"]
        held = client.post(
            HOLD.format(source_id), json={"reason": "litigation 42"}, headers=people["carol"]
        )
        assert held.status_code == 200, held.text
        assert held.json()["legal_hold"] is True
        assert held.json()["legal_hold_by"] == "carol"
        again = client.post(
            HOLD.format(source_id), json={"reason": "again"}, headers=people["cora"]
        )
        assert again.status_code == 409 and again.json()["error"]["code"] == "legal_hold_set"

        due = stored["uploaded"] + RETENTION * DAY + 1
        result = sweep(now=due)
        assert result.deleted == [] and source_id in result.held
        assert _content(client, people, file_id).status_code == 200

        released = client.request(
            "DELETE",
            HOLD.format(source_id),
            json={"reason": "case closed"},
            headers=people["carol"],
        )
        assert released.status_code == 200 and released.json()["legal_hold"] is False
        assert sweep(now=due).deleted == [file_id]
        [set_event] = _events(client, people, "data_source.legal_hold_set")
        [released_event] = _events(client, people, "data_source.legal_hold_released")
        assert set_event["resource"] == released_event["resource"] == f"ds:{source_id}"
        assert "litigation" not in str(set_event)  # the trail keeps the reason's hash

    def test_only_compliance_may_hold(self, client, people, stored):
        for who in ("dora", "bob"):
            response = client.post(
                HOLD.format(stored["source"]["id"]), json={"reason": "mine"}, headers=people[who]
            )
            assert response.status_code == 403

    def test_releasing_without_a_hold_is_refused(self, client, people, stored):
        response = client.request(
            "DELETE",
            HOLD.format(stored["source"]["id"]),
            json={"reason": "x" * 5},
            headers=people["carol"],
        )
        assert response.status_code == 409
        assert response.json()["error"]["code"] == "legal_hold_not_set"

    def test_another_tenants_source_is_not_found(self, client, people, stored, token):
        other = token("olga", "compliance-officer", tenant="other")
        response = client.post(
            HOLD.format(stored["source"]["id"]), json={"reason": "not yours"}, headers=other
        )
        assert response.status_code == 404


class TestConsole:
    def test_the_owner_sees_what_is_due_and_the_hold(
        self,
        client,
        people,
        stored,
        sweep,
        sign_in,  # noqa: F811
    ):
        file_id, source_id = stored["file"]["id"], stored["source"]["id"]
        sweep(now=stored["uploaded"] + (RETENTION - 1) * DAY)
        home = sign_in("dora", "data-owner").get("/console").text
        assert 'aria-label="Files due for deletion (retention): 1"' in home
        assert file_id in home
        other = sign_in("bob", "ml-engineer").get("/console").text
        assert "Files due for deletion" not in other
        held = client.post(
            HOLD.format(source_id), json={"reason": "audit 7"}, headers=people["carol"]
        )
        assert held.status_code == 200
        page = sign_in("carol", "compliance-officer").get(f"/console/data-sources/{source_id}")
        assert "Legal hold" in page.text and "retention deletion suspended" in page.text
        assert "Files due for deletion" not in sign_in("dora", "data-owner").get("/console").text


class TestInUse:
    def test_a_file_a_job_reads_waits_for_the_job_to_end(
        self, client, people, stored, sweep, state
    ):
        file_id = stored["file"]["id"]
        job = _with_required(
            FineTuningJob,
            dict(
                id="ftjob-retention0000000000",
                tenant="default",
                created_by="bob",
                created_at=int(time.time()),
                created_ns=time.time_ns(),
                model="tiny-llama",
                base_model="tiny-llama",
                training_file=file_id,
                purpose="support-assistant",
                seed=1,
                hyperparameters={},
                spec={},
                decisions=[],
                estimate={},
                status="running",
                executor="local",
            ),
        )
        with Session(state.engine) as session:
            session.add(job)
            session.commit()
        due = stored["uploaded"] + RETENTION * DAY + 1
        result = sweep(now=due)
        assert result.deleted == [] and result.waiting_for_jobs == [file_id]
        assert _content(client, people, file_id).status_code == 200
        with Session(state.engine) as session:
            row = session.get(FineTuningJob, "ftjob-retention0000000000")
            row.status = "succeeded"
            session.add(row)
            session.commit()
        assert sweep(now=due).deleted == [file_id]


class TestAuditRetentionSetting:
    def test_less_than_six_months_is_refused(self):
        with pytest.raises(ValidationError) as refused:
            Settings(env="dev", audit_retention_days=182)
        message = str(refused.value)
        assert "Art. 19(1)" in message and "26(6)" in message and "183" in message

    def test_six_months_or_more_is_accepted(self):
        assert Settings(env="dev", audit_retention_days=183).audit_retention_days == 183
        assert Settings(env="dev").audit_retention_days >= 183
