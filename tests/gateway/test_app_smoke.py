from __future__ import annotations


class TestHealth:
    def test_healthz_needs_nothing(self, client):
        assert client.get("/healthz").json() == {"status": "ok"}

    def test_readyz_reports_database_and_policy(self, client):
        response = client.get("/readyz")
        assert response.status_code == 200
        assert response.json()["checks"] == {
            "database": True,
            "policy": True,
            "audit_sequencer": True,
            "job_writer": True,
        }
