from __future__ import annotations

import pytest

from tests.gateway.conftest import TINY_BASE, good_file, upload

PURPOSE = "support-assistant"


@pytest.fixture
def gateway_settings(gateway_settings, tiny_model_root):
    return gateway_settings.model_copy(update={"model_import_roots": [tiny_model_root]})


def _submit(client, headers, ready, **overrides):
    body = {
        "model": TINY_BASE,
        "training_file": ready["training"]["id"],
        "validation_file": ready["validation"]["id"],
        "purpose": PURPOSE,
        "hyperparameters": {"n_epochs": 1},
        **overrides,
    }
    return client.post("/v1/fine_tuning/jobs", json=body, headers=headers)


def _refusals(client, people, action="job.refused") -> list[dict]:
    return client.get(
        "/v1/audit/events", params={"action": action}, headers=people["carol"]
    ).json()["data"]


class TestSubmit:
    def test_a_governed_job_is_queued_with_its_decisions(self, client, people, ready):
        response = _submit(
            client, people["bob"], ready, suffix="support", seed=7, metadata={"team": "care"}
        )
        assert response.status_code == 200, response.text
        job = response.json()
        assert job["object"] == "fine_tuning.job" and job["id"].startswith("ftjob-")
        assert job["status"] == "queued" and job["model"] == TINY_BASE
        assert job["organization_id"] == "default" and job["seed"] == 7
        assert job["user_provided_suffix"] == "support" and job["metadata"] == {"team": "care"}
        assert job["hyperparameters"]["n_epochs"] == 1
        policy = {(d["object"], d["action"]) for d in job["decisions"] if d["kind"] == "policy"}
        assert policy == {
            ("job:*", "create"),
            (f"base:{TINY_BASE}", "train"),
            (f"ds:{ready['source']['id']}", "train"),
        }
        gates = {d["gate"] for d in job["decisions"] if d["kind"] == "gate"}
        assert gates == {
            "data_source_approved",
            "purpose",
            "min_examples",
            "train_validation_overlap",
            "quota",
        }
        assert all(d["policy_version"] for d in job["decisions"] if d["kind"] == "policy")
        assert job["estimate"]["tokens_processed"] > 0 and job["estimate"]["flops"] > 0

    def test_the_seed_is_reported_and_handed_to_the_trainer(self, client, people, ready):
        from sqlmodel import Session

        from gateway.jobs.models import FineTuningJob

        given = _submit(client, people["bob"], ready, seed=12345).json()
        drawn = _submit(client, people["bob"], ready).json()
        assert given["seed"] == 12345 and isinstance(drawn["seed"], int)
        with Session(client.app.state.gateway.engine) as session:
            for job in (given, drawn):
                assert session.get(FineTuningJob, job["id"]).spec["seed"] == job["seed"]

    def test_the_submission_is_audited_with_file_hashes(self, client, people, ready):
        job = _submit(client, people["bob"], ready).json()
        [event] = _refusals(client, people, "job.created")
        assert event["resource"] == f"job:{job['id']}"
        hashes = {f["sha256"] for f in event["details"]["files"]}
        assert hashes == {ready["training"]["sha256"], ready["validation"]["sha256"]}

    def test_the_sdk_shape_with_method_and_metadata_purpose(self, client, people, ready):
        response = _submit(
            client,
            people["bob"],
            ready,
            purpose=None,
            hyperparameters=None,
            metadata={"purpose": PURPOSE},
            method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2}}},
        )
        assert response.status_code == 200, response.text
        assert response.json()["hyperparameters"]["n_epochs"] == 2
        assert response.json()["purpose"] == PURPOSE


class TestRefusals:
    def test_no_grant_on_the_data_source(self, client, people, ready, token):
        eve = token("eve", "ml-engineer")
        response = _submit(client, eve, ready)
        assert response.status_code == 403
        assert response.json()["error"]["details"]["object"] == f"ds:{ready['source']['id']}"
        denied = client.get(
            "/v1/audit/events", params={"action": "authz.denied"}, headers=people["carol"]
        ).json()["data"]
        assert denied[-1]["actor"] == "eve"
        assert client.get("/v1/fine_tuning/jobs", headers=people["bob"]).json()["data"] == []

    def test_restricted_data_is_never_trained_on_by_ml_engineers(
        self, client, people, approved_source, registered_base, grant
    ):
        source = approved_source(classification="restricted", min_examples=2)
        training = upload(
            client, people["dora"], data_source=source["id"], content=good_file(4)
        ).json()
        grant("bob", f"ds:{source['id']}", "train")
        response = client.post(
            "/v1/fine_tuning/jobs",
            json={"model": TINY_BASE, "training_file": training["id"], "purpose": PURPOSE},
            headers=people["bob"],
        )
        assert response.status_code == 403

    def test_purpose_not_allowed_by_the_source(self, client, people, ready):
        response = _submit(client, people["bob"], ready, purpose="marketing")
        assert response.status_code == 403
        assert response.json()["error"]["code"] == "purpose_not_allowed"
        [refusal] = _refusals(client, people)
        assert refusal["details"]["code"] == "purpose_not_allowed"
        assert refusal["decision"] == "deny"

    def test_a_revoked_source(self, client, people, ready):
        client.post(
            f"/v1/data_sources/{ready['source']['id']}/revoke",
            json={"reason": "consent withdrawn"},
            headers=people["carol"],
        )
        response = _submit(client, people["bob"], ready)
        assert response.status_code == 403
        assert response.json()["error"]["code"] == "data_source_not_approved"

    def test_too_few_examples_names_the_numbers(
        self, client, people, approved_source, registered_base, grant
    ):
        source = approved_source(min_examples=50)
        training = upload(
            client, people["dora"], data_source=source["id"], content=good_file(4)
        ).json()
        grant("bob", f"ds:{source['id']}", "train")
        response = client.post(
            "/v1/fine_tuning/jobs",
            json={"model": TINY_BASE, "training_file": training["id"], "purpose": PURPOSE},
            headers=people["bob"],
        )
        assert response.status_code == 400
        error = response.json()["error"]
        assert error["code"] == "too_few_examples"
        assert error["details"] == {"examples": 4, "minimum": 50}

    def test_validation_overlapping_training(self, client, people, ready):
        overlapping = upload(
            client, people["dora"], data_source=ready["source"]["id"], content=good_file(5)
        ).json()
        response = _submit(client, people["bob"], ready, validation_file=overlapping["id"])
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "train_validation_overlap"

    def test_concurrent_job_quota(self, client, people, ready, gateway_settings):
        limit = gateway_settings.quota_concurrent_jobs
        for _ in range(limit):
            assert _submit(client, people["bob"], ready).status_code == 200
        response = _submit(client, people["bob"], ready)
        assert response.status_code == 429
        assert response.json()["error"]["details"] == {
            "quota": "concurrent_jobs",
            "limit": limit,
            "current": limit,
        }

    def test_monthly_compute_quota(self, client, people, ready, gateway_settings):
        from fastapi.testclient import TestClient

        from gateway.main import create_app

        settings = gateway_settings.model_copy(update={"quota_device_hours_per_month": 1e-12})
        with TestClient(create_app(settings)) as tight:
            response = _submit(tight, people["bob"], ready)
        assert response.status_code == 429
        assert response.json()["error"]["details"]["quota"] == "device_hours_per_month"

    def test_unknown_model_and_file(self, client, people, ready):
        assert _submit(client, people["bob"], ready, model="nope").status_code == 404
        missing = _submit(client, people["bob"], ready, training_file="file-" + "0" * 24)
        assert missing.status_code == 404
        assert missing.json()["error"]["param"] == "training_file"

    def test_a_rejected_file_cannot_be_trained_on(self, client, people, ready):
        bad = upload(
            client, people["dora"], data_source=ready["source"]["id"], content=b"not json\n"
        ).json()
        response = _submit(client, people["bob"], ready, training_file=bad["id"])
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "file_not_usable"

    @pytest.mark.parametrize(
        ("overrides", "param", "rule"),
        [
            ({"method": {"type": "reinforcement"}}, "method.type", "'supervised'"),
            ({"integrations": [{"type": "wandb"}]}, "integrations.0.wandb", "required"),
            ({"purpose": None}, None, "purpose is required"),
            (
                {"hyperparameters": {"n_epochs": 0}},
                "hyperparameters.n_epochs",
                "an integer ≥ 1 or 'auto'",
            ),
            (
                {"hyperparameters": {"batch_size": "x"}},
                "hyperparameters.batch_size",
                "an integer ≥ 1 or 'auto'",
            ),
            (
                {"hyperparameters": {"learning_rate_multiplier": 0}},
                "hyperparameters.learning_rate_multiplier",
                "a number > 0 or 'auto'",
            ),
            ({"lora": {"r": 0}}, "lora.r", "greater than or equal to 1"),
            ({"surprise": True}, "surprise", "Extra inputs"),
            (
                {"hyperparameters": {"n_epochs": 1}, "method": {"type": "supervised"}},
                None,
                "either",
            ),
            ({"metadata": {f"k{i}": "v" for i in range(17)}}, "metadata", "at most 16"),
            ({"metadata": {"k" * 65: "v"}}, "metadata", "at most 64 characters"),
            ({"metadata": {"k": "v" * 513}}, "metadata.k", "at most 512 characters"),
            ({"seed": -1}, "seed", "greater than or equal to 0"),
        ],
    )
    def test_bad_bodies_get_400_as_openai_answers(
        self, client, people, ready, overrides, param, rule
    ):
        response = _submit(client, people["bob"], ready, **overrides)
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["type"] == "invalid_request_error" and error["code"] == "invalid_request"
        assert error["param"] == param or (param and error["param"].startswith(param))
        assert rule in error["message"], error["message"]
        assert "Input should be 'auto'" not in error["message"]

    def test_sixteen_metadata_keys_at_their_limits_are_taken(self, client, people, ready):
        metadata = {f"{i:02d}" + "k" * 62: "v" * 512 for i in range(16)}
        response = _submit(client, people["bob"], ready, metadata=metadata)
        assert response.status_code == 200, response.text
        assert response.json()["metadata"] == metadata

    def test_a_wandb_integration_is_refused_offline(self, client, people, ready):
        wandb = [{"type": "wandb", "wandb": {"project": "care"}}]
        response = _submit(client, people["bob"], ready, integrations=wandb)
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["code"] == "integration_unavailable" and error["param"] == "integrations"
        assert "offline" in error["message"]


class TestIntegrationsOnline:
    @pytest.fixture
    def gateway_settings(self, gateway_settings):
        return gateway_settings.model_copy(update={"offline": False})

    def test_integrations_are_stored_and_echoed(self, client, people, ready):
        wandb = {"project": "care", "name": "run-1", "entity": None, "tags": ["a"]}
        response = _submit(
            client, people["bob"], ready, integrations=[{"type": "wandb", "wandb": wandb}]
        )
        assert response.status_code == 200, response.text
        job = client.get(f"/v1/fine_tuning/jobs/{response.json()['id']}", headers=people["bob"])
        assert job.json()["integrations"] == [{"type": "wandb", "wandb": wandb}]


class TestLifecycle:
    def test_list_get_and_metadata_filter(self, client, people, ready, token):
        first = _submit(client, people["bob"], ready, metadata={"team": "a"}).json()
        second = _submit(client, people["bob"], ready, metadata={"team": "b"}).json()
        page = client.get("/v1/fine_tuning/jobs", headers=people["bob"]).json()
        assert [job["id"] for job in page["data"]] == [second["id"], first["id"]]
        only_a = client.get(
            "/v1/fine_tuning/jobs", params={"metadata[team]": "a"}, headers=people["bob"]
        ).json()
        assert [job["id"] for job in only_a["data"]] == [first["id"]]
        neither = client.get(
            "/v1/fine_tuning/jobs",
            params={"metadata[team]": "a", "metadata[other]": "x"},
            headers=people["bob"],
        ).json()
        assert neither["data"] == []
        bad = client.get("/v1/fine_tuning/jobs", params={"metadata[]": "a"}, headers=people["bob"])
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_filter"
        paged = client.get(
            "/v1/fine_tuning/jobs",
            params={"limit": 1, "after": second["id"]},
            headers=people["bob"],
        ).json()
        assert [job["id"] for job in paged["data"]] == [first["id"]]
        assert (
            client.get(f"/v1/fine_tuning/jobs/{first['id']}", headers=people["bob"]).json()["id"]
            == first["id"]
        )
        outsider = token("olga", "ml-engineer", tenant="other")
        assert (
            client.get(f"/v1/fine_tuning/jobs/{first['id']}", headers=outsider).status_code == 404
        )

    def test_cancel_a_queued_job(self, client, people, ready):
        job = _submit(client, people["bob"], ready).json()
        cancelled = client.post(f"/v1/fine_tuning/jobs/{job['id']}/cancel", headers=people["bob"])
        assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
        again = client.post(f"/v1/fine_tuning/jobs/{job['id']}/cancel", headers=people["bob"])
        assert again.status_code == 409
        assert again.json()["error"]["code"] == "job_not_cancellable"

    def test_events_newest_first_and_as_a_stream(self, client, people, ready):
        job = _submit(client, people["bob"], ready).json()
        client.post(f"/v1/fine_tuning/jobs/{job['id']}/cancel", headers=people["bob"])
        events = client.get(
            f"/v1/fine_tuning/jobs/{job['id']}/events", headers=people["bob"]
        ).json()
        messages = [event["message"] for event in events["data"]]
        assert messages[0] == "Job cancelled" and len(messages) == 3
        assert all(event["object"] == "fine_tuning.job.event" for event in events["data"])
        with client.stream(
            "GET", f"/v1/fine_tuning/jobs/{job['id']}/events/stream", headers=people["bob"]
        ) as stream:
            ids = [
                line.removeprefix("id: ").strip()
                for line in stream.iter_lines()
                if line.startswith("id: ")
            ]
        assert ids == [event["id"] for event in reversed(events["data"])]
        with client.stream(
            "GET",
            f"/v1/fine_tuning/jobs/{job['id']}/events/stream",
            headers={**people["bob"], "Last-Event-ID": ids[0]},
        ) as stream:
            resumed = [
                line.removeprefix("id: ").strip()
                for line in stream.iter_lines()
                if line.startswith("id: ")
            ]
        assert resumed == ids[1:]

    def test_checkpoints_list_is_empty_before_training(self, client, people, ready):
        job = _submit(client, people["bob"], ready).json()
        page = client.get(
            f"/v1/fine_tuning/jobs/{job['id']}/checkpoints", headers=people["bob"]
        ).json()
        assert page == {
            "object": "list",
            "data": [],
            "has_more": False,
            "first_id": None,
            "last_id": None,
        }


class TestReviewRegressions:
    def test_a_bad_last_event_id_is_a_4xx(self, client, people, ready):
        job = _submit(client, people["bob"], ready).json()
        response = client.get(
            f"/v1/fine_tuning/jobs/{job['id']}/events/stream",
            headers={**people["bob"], "Last-Event-ID": "ftevent-x1"},
        )
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "invalid_cursor"

    def test_a_file_whose_content_is_missing_is_refused(
        self, client, people, ready, gateway_settings
    ):
        from tests.gateway.files.test_files import _stored_files

        for path in _stored_files(gateway_settings):
            if path.name.startswith(ready["validation"]["content_sha256"]):
                path.unlink()
        response = _submit(client, people["bob"], ready)
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "file_not_usable"

    def test_erasing_a_files_data_stops_the_jobs_that_read_it(self, client, people, ready):
        job = _submit(client, people["bob"], ready).json()
        request = client.post(
            "/v1/erasure_requests", json={"subject": "order 3?"}, headers=people["carol"]
        ).json()
        assert ready["training"]["id"] in {f["file_id"] for f in request["findings"]["files"]}
        decided = client.post(
            f"/v1/erasure_requests/{request['id']}/decide",
            json={"decision": "delete_data"},
            headers=people["carol"],
        )
        assert decided.status_code == 200, decided.text
        stopped = client.get(f"/v1/fine_tuning/jobs/{job['id']}", headers=people["bob"]).json()
        assert stopped["status"] == "cancelled"


class TestPauseAndResumeRefusals:
    def test_only_a_running_job_pauses_and_only_a_paused_one_resumes(
        self, client, people, ready, token
    ):
        job = _submit(client, people["bob"], ready).json()
        paused = client.post(f"/v1/fine_tuning/jobs/{job['id']}/pause", headers=people["bob"])
        assert paused.status_code == 409, paused.text
        error = paused.json()["error"]
        assert error["code"] == "job_not_running" and error["details"]["status"] == "queued"
        resumed = client.post(f"/v1/fine_tuning/jobs/{job['id']}/resume", headers=people["ada"])
        assert resumed.status_code == 409
        assert resumed.json()["error"]["code"] == "job_not_paused"
        # Another engineer may cancel the tenant's jobs, but pauses only their own.
        eve = client.post(
            f"/v1/fine_tuning/jobs/{job['id']}/pause", headers=token("eve", "ml-engineer")
        )
        assert eve.status_code == 403 and eve.json()["error"]["code"] == "not_job_requester"
        [refused] = _refusals(client, people, "job.pause_refused")
        assert refused["actor"] == "eve" and refused["details"]["code"] == "not_job_requester"
