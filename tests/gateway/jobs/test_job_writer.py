"""Job submissions written in groups (gateway.jobs.writer) from rows kept in memory
(gateway.jobs.snapshots): what the write transaction must still catch, and what a failed
or abandoned write must never leave behind."""

from __future__ import annotations

import contextlib
import hashlib
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from sqlalchemy import select, text
from sqlmodel import Session

from gateway.errors import ServiceUnavailable
from gateway.jobs.models import FineTuningJob
from gateway.jobs.writer import Submission, SubmissionWriter
from tests.gateway.conftest import TINY_BASE

PURPOSE = "support-assistant"
UNLIMITED = {"quota_concurrent_jobs": 10**6, "quota_device_hours_per_month": 1e9}


@pytest.fixture
def gateway_settings(gateway_settings, tiny_model_root):
    return gateway_settings.model_copy(update={"model_import_roots": [tiny_model_root]})


def _body(ready) -> dict:
    return {
        "model": TINY_BASE,
        "training_file": ready["training"]["id"],
        "purpose": PURPOSE,
        "hyperparameters": {"n_epochs": 1},
    }


def _submit(client, people, ready):
    return client.post("/v1/fine_tuning/jobs", json=_body(ready), headers=people["bob"])


def _job_ids(client) -> set[str]:
    with Session(client.app.state.gateway.engine) as session:
        return set(session.scalars(select(FineTuningJob.id)).all())


class TestRowsKeptFromEarlierSubmissions:
    """The first submission leaves the base model, file and source in memory; a change
    made after it must still refuse the next one, in the write transaction."""

    def _change_then_submit(self, client, people, ready, change):
        assert _submit(client, people, ready).status_code == 200
        change()
        return _submit(client, people, ready)

    def _refusal_gates(self, client, people) -> list[str]:
        events = client.get(
            "/v1/audit/events", params={"action": "job.refused"}, headers=people["carol"]
        ).json()["data"]
        return [event["details"]["gate"] for event in events]

    def test_a_source_revoked_since(self, client, people, ready):
        response = self._change_then_submit(
            client,
            people,
            ready,
            lambda: client.post(
                f"/v1/data_sources/{ready['source']['id']}/revoke",
                json={"reason": "consent withdrawn"},
                headers=people["carol"],
            ),
        )
        assert response.status_code == 403, response.text
        assert response.json()["error"]["code"] == "data_source_not_approved"
        assert self._refusal_gates(client, people) == ["data_source_approved"]

    def test_a_base_model_retired_since(self, client, people, ready):
        response = self._change_then_submit(
            client,
            people,
            ready,
            lambda: client.post(f"/v1/base_models/{TINY_BASE}/retire", headers=people["ada"]),
        )
        assert response.status_code == 400, response.text
        assert response.json()["error"]["code"] == "base_model_retired"
        assert self._refusal_gates(client, people) == ["model"]

    def test_a_file_erased_since(self, client, people, ready):
        def erase() -> None:
            request = client.post(
                "/v1/erasure_requests", json={"subject": "order 3?"}, headers=people["carol"]
            ).json()
            decided = client.post(
                f"/v1/erasure_requests/{request['id']}/decide",
                json={"decision": "delete_data"},
                headers=people["carol"],
            )
            assert decided.status_code == 200, decided.text

        response = self._change_then_submit(client, people, ready, erase)
        assert response.status_code == 400, response.text
        assert response.json()["error"]["code"] == "file_not_usable"

    def test_another_tenant_never_gets_a_kept_row(self, client, people, ready, token):
        assert _submit(client, people, ready).status_code == 200
        outsider = token("eve", "ml-engineer", tenant="other")
        response = client.post("/v1/fine_tuning/jobs", json=_body(ready), headers=outsider)
        assert response.status_code == 404, response.text
        # the first row it reaches is the kept base model, which is tenant default's own
        # (registered by that tenant's admin), so it is as absent as the file behind it
        assert response.json()["error"]["code"] == "model_not_found"


class TestGroupedWrites:
    def test_concurrent_submissions_never_exceed_the_quota(
        self, people, ready, gateway_settings, live_server
    ):
        """Submissions racing through one batch are counted against the quota in order."""
        limit = 3
        base = live_server(gateway_settings.model_copy(update={"quota_concurrent_jobs": limit}))

        def submit(_: int) -> int:
            with httpx.Client(base_url=base, headers=people["bob"], timeout=60) as http:
                return http.post("/v1/fine_tuning/jobs", json=_body(ready)).status_code

        with ThreadPoolExecutor(12) as pool:
            statuses = sorted(pool.map(submit, range(12)))
        assert statuses == [200] * limit + [429] * (12 - limit)

    def test_a_submission_that_cannot_be_written_fails_alone(self, client, people, ready):
        """A batch whose transaction fails is retried one by one: only the submission
        that cannot be written fails (here: an audit event the trail refuses, a float)."""
        engine = client.app.state.gateway.engine
        writer = SubmissionWriter(engine, on_committed=lambda _: None, **UNLIMITED)
        first, bad, last = (_submission(client, people, ready) for _ in range(3))
        bad.audit["details"] = {"fraction": 0.5}
        outcomes: dict[str, object] = {}

        def write(name: str, submission: Submission) -> None:
            try:
                writer.write(submission)
                outcomes[name] = "written"
            except ServiceUnavailable as exc:
                outcomes[name] = exc.code

        try:
            with _writes_held(engine, tenant="default"):
                threads = [threading.Thread(target=write, args=("first", first))]
                threads[0].start()
                _wait_for(lambda: first._state == "taken")  # the writer is blocked on it
                for name, submission in (("bad", bad), ("last", last)):
                    threads.append(threading.Thread(target=write, args=(name, submission)))
                    threads[-1].start()
                _wait_for(lambda: writer._queue.qsize() == 2)  # queued: the next batch
            for thread in threads:
                thread.join(30)
        finally:
            writer.stop()
        assert outcomes == {"first": "written", "bad": "database_error", "last": "written"}
        written = _job_ids(client)
        assert {first.job.id, last.job.id} <= written and bad.job.id not in written

    def test_a_submission_abandoned_before_it_was_taken_never_lands(self, client, people, ready):
        engine = client.app.state.gateway.engine
        writer = SubmissionWriter(
            engine, on_committed=lambda _: None, write_timeout=0.3, **UNLIMITED
        )
        taken, abandoned = _submission(client, people, ready), _submission(client, people, ready)
        try:
            with _writes_held(engine, tenant="default"):
                thread = threading.Thread(target=writer.write, args=(taken,))
                thread.start()
                _wait_for(lambda: taken._state == "taken")
                with pytest.raises(ServiceUnavailable) as refused:
                    writer.write(abandoned)
                assert refused.value.code == "database_busy"
            thread.join(30)
        finally:
            writer.stop()
        written = _job_ids(client)
        assert taken.job.id in written and abandoned.job.id not in written

    def test_a_stopped_writer_answers_at_once(self, client, people, ready):
        """Not a request left waiting for a writer nobody runs any more."""
        writer = SubmissionWriter(
            client.app.state.gateway.engine, on_committed=lambda _: None, **UNLIMITED
        )
        writer.write(_submission(client, people, ready))
        writer.stop()
        late = _submission(client, people, ready)
        with pytest.raises(ServiceUnavailable) as refused:
            writer.write(late)
        assert refused.value.code == "shutting_down"
        assert late.job.id not in _job_ids(client)


def _submission(client, people, ready) -> Submission:
    """A real submission's job and audit event (as the service would build them), ready to
    hand to a writer of the test's own."""
    from gateway.jobs.submission import new_job_id

    template = _submit(client, people, ready).json()
    now_ns = time.time_ns()
    job = FineTuningJob(
        id=new_job_id(),
        tenant="default",
        created_by="bob",
        created_at=now_ns // 10**9,
        created_ns=now_ns,
        model=TINY_BASE,
        base_model=TINY_BASE,
        training_file=template["training_file"],
        purpose=PURPOSE,
        seed=1,
        hyperparameters=template["hyperparameters"],
        lora=template["lora"],
        evaluation=template["evaluation"],
        spec={},
        decisions=[],
        estimate={},
        estimated_device_seconds=0.0,
        status="queued",
        executor="local",
        result_files=[],
    )
    return Submission(
        job=job,
        messages=["created"],
        audit={
            "actor": "bob",
            "tenant": "default",
            "action": "job.created",
            "resource": f"job:{job.id}",
            "decision": "allow",
            "details": {},
        },
        source_ids=[ready["source"]["id"]],
        file_ids=[ready["training"]["id"]],
    )


@contextlib.contextmanager
def _writes_held(engine, *, tenant: str):
    """Keeps the writer waiting, the way a long write by someone else would: on SQLite the
    database's write lock, on PostgreSQL the tenant's quota lock."""
    with Session(engine) as session:
        if engine.dialect.name == "postgresql":
            key = int.from_bytes(
                hashlib.sha256(f"quota:{tenant}".encode()).digest()[:8], "big", signed=True
            )
            session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})
        else:
            session.execute(text("SELECT 1"))  # BEGIN IMMEDIATE: the write lock
        yield
        session.rollback()


def _wait_for(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)
