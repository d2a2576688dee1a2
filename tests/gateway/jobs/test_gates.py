"""Each job gate on its own: the figures it records when it passes, the refusal (status,
code, param, figures) when it does not. The submission's read checks and the writer's
re-checks call these same functions (tests/gateway/jobs/test_job_writer.py shows the
writer's refusals end to end)."""

from __future__ import annotations

import pytest

from gateway.jobs import gates


def _refused(outcome: gates.Outcome, status: int, code: str) -> dict:
    assert not outcome.passed
    assert outcome.refusal is not None
    assert (outcome.refusal.status_code, outcome.refusal.code) == (status, code)
    return outcome.refusal.details or {}


class TestModelAndFiles:
    def test_a_retired_base_model_is_refused_with_its_status(self):
        assert gates.base_model_active("tiny", status="active").passed
        details = _refused(
            gates.base_model_active("tiny", status="retired"), 400, "base_model_retired"
        )
        assert details == {"base_model": "tiny", "status": "retired"}

    @pytest.mark.parametrize(
        ("status", "stored"), [("error", False), ("deleted", False), ("processed", False)]
    )
    def test_only_a_processed_and_stored_file_is_usable(self, status, stored):
        outcome = gates.file_usable("file-1", status=status, stored=stored, param="training_file")
        assert _refused(outcome, 400, "file_not_usable") == {"file_id": "file-1", "status": status}
        assert outcome.refusal.param == "training_file"
        assert gates.file_usable("file-1", status="processed", stored=True, param=None).passed

    def test_only_a_file_uploaded_for_fine_tuning_is_trained_on(self):
        refused = gates.file_for_training("file-1", purpose="assistants", param="validation_file")
        _refused(refused, 400, "file_not_usable")
        assert gates.file_for_training("file-1", purpose="fine-tune", param=None).passed


class TestDataSources:
    @pytest.mark.parametrize("status", ["proposed", "revoked"])
    def test_only_an_approved_source_is_trained_on(self, status):
        details = _refused(
            gates.source_approved("ds-1", status=status), 403, "data_source_not_approved"
        )
        assert details == {"data_source": "ds-1", "status": status}

    def test_an_approved_source_records_who_approved_it_under_which_policy(self):
        passed = gates.source_approved(
            "ds-1", status="approved", approved_by="carol", approval_policy_version="v1"
        )
        assert passed.figures == {
            "data_source": "ds-1",
            "approved_by": "carol",
            "approval_policy_version": "v1",
        }

    def test_purpose_must_be_allowed(self):
        refused = gates.purpose_allowed(
            "ds-1", purpose="marketing", allowed_purposes=["claims-triage"]
        )
        assert _refused(refused, 403, "purpose_not_allowed")["allowed_purposes"] == [
            "claims-triage"
        ]
        allowed = gates.purpose_allowed(
            "ds-1", purpose="claims-triage", allowed_purposes=["claims-triage"]
        )
        assert allowed.figures == {"data_source": "ds-1", "purpose": "claims-triage"}


class TestData:
    def test_too_few_examples_name_both_numbers(self):
        refused = gates.enough_examples(3, minimum=10)
        assert _refused(refused, 400, "too_few_examples") == {"examples": 3, "minimum": 10}
        assert refused.refusal.param == "training_file"
        assert gates.enough_examples(10, minimum=10).figures == {"examples": 10, "minimum": 10}


class TestQuotas:
    def test_concurrent_jobs_at_the_limit_are_refused(self):
        details = _refused(gates.concurrent_jobs(4, limit=4), 429, "quota_exceeded")
        assert details == {"quota": "concurrent_jobs", "limit": 4, "current": 4}
        assert gates.concurrent_jobs(3, limit=4).figures == {"active_jobs": 3}

    def test_device_hours_count_this_job_too(self):
        refused = gates.device_hours(3600 * 9.5, requested_seconds=3600, limit_hours=10)
        details = _refused(refused, 429, "quota_exceeded")
        assert details == {
            "quota": "device_hours_per_month",
            "limit": 10,
            "used": 9.5,
            "requested": 1.0,
        }
        passed = gates.device_hours(3600 * 8, requested_seconds=3600, limit_hours=10)
        assert passed.figures == {"device_hours_used": 8.0}
