from __future__ import annotations

import pytest
import structlog
import structlog.testing
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from gateway.config import InsecureSettingsError, Settings
from gateway.db import make_engine
from gateway.main import create_app
from gateway.state import SchemaNotReadyError
from policies.enforcer import PolicyEngine


class TestDecisionErrors:
    def test_a_request_the_policy_cannot_decide_is_denied_and_audited_as_error(
        self, client, token, gateway_settings
    ):
        # A policy engine that cannot decide (here: never loaded) must deny, and the
        # denial is recorded as "error".
        client.app.state.gateway.policy = PolicyEngine()
        response = client.get("/v1/policies/versions", headers=token("eve", "admin"))
        assert response.status_code == 403
        assert response.json()["error"]["code"] == "authorization_error"
        client.app.state.gateway.flush_audit_queue()
        engine = make_engine(gateway_settings.database_url)
        with engine.connect() as connection:
            rows = connection.execute(
                text(
                    "SELECT actor, tenant, decision, resource FROM audit_events "
                    "WHERE action = 'authz.denied'"
                )
            ).all()
        engine.dispose()
        assert [tuple(row) for row in rows] == [("eve", "default", "error", "invalid-request")]


class TestLogs:
    def test_tokens_never_reach_the_log(self, client, token):
        headers = token("bob", "ml-engineer")
        signature = headers["Authorization"].split(".")[-1]
        with structlog.testing.capture_logs() as events:
            client.get("/v1/policies/versions", headers=headers)
            client.get("/v1/policies/versions", headers={"Authorization": "Bearer x.y.zzz"})
        logged = repr(events)
        assert "authn.refused" in logged  # the log was captured, and it is clean:
        assert signature not in logged
        assert "x.y.zzz" not in logged

    def test_request_id_is_echoed(self, client):
        response = client.get("/healthz", headers={"X-Request-ID": "trace-123"})
        assert response.headers["x-request-id"] == "trace-123"
        unsafe = client.get("/healthz", headers={"X-Request-ID": "bad id\nwith newline"})
        assert unsafe.headers["x-request-id"] != "bad id\nwith newline"


class TestMetrics:
    def test_labels_are_route_templates_not_ids(self, client, token):
        officer = token("carol", "compliance-officer")
        client.get("/v1/audit/events/12345/proof", headers=officer)
        body = client.get("/metrics").text
        assert 'route="/v1/audit/events/{seq}/proof"' in body
        assert "12345" not in body
        assert "carol" not in body


class TestReadiness:
    def test_not_ready_without_a_database(self, gateway_settings):
        with TestClient(create_app(gateway_settings)) as client:
            client.app.state.gateway.engine = create_engine("sqlite:////proc/no/such/dir.db")
            response = client.get("/readyz")
        assert response.status_code == 503
        assert response.json()["checks"]["database"] is False

    def test_not_ready_without_a_loaded_policy(self, gateway_settings):
        with TestClient(create_app(gateway_settings)) as client:
            client.app.state.gateway.policy = PolicyEngine()
            response = client.get("/readyz")
        assert response.status_code == 503
        assert response.json()["checks"]["policy"] is False


class TestStartUp:
    def test_refuses_a_schema_that_is_not_at_head(self, fresh_engine, tmp_path):
        engine = fresh_engine(migrate=False)
        settings = Settings(
            database_url=engine.url.render_as_string(hide_password=False), artifact_dir=tmp_path
        )
        with pytest.raises(SchemaNotReadyError), TestClient(create_app(settings)):
            pass

    @pytest.mark.parametrize(
        "overrides",
        [
            {},
            {"jwt_secret": "short"},
            {"jwt_secret": "tunegate-dev-secret-do-not-use-in-production!"},
        ],
    )
    def test_prod_refuses_weak_secrets(self, overrides, tmp_path):
        with pytest.raises((InsecureSettingsError, ValueError)):
            Settings(env="prod", audit_signing_key=tmp_path / "k.pem", **overrides)

    def test_prod_accepts_a_strong_secret(self, tmp_path):
        Settings(env="prod", jwt_secret="x" * 32, audit_signing_key=tmp_path / "k.pem")


class TestBackgroundThreadsHealth:
    @pytest.mark.parametrize(
        ("part", "check"), [("sequencer", "audit_sequencer"), ("job_writer", "job_writer")]
    )
    def test_not_ready_when_a_background_thread_is_gone(self, gateway_settings, part, check):
        with TestClient(create_app(gateway_settings)) as client:
            getattr(client.app.state.gateway, part).stop()
            response = client.get("/readyz")
        assert response.status_code == 503
        assert response.json()["checks"][check] is False


class TestRequestSize:
    def test_an_oversized_body_is_refused_by_its_declared_length(self, client, token):
        body = b'{"rules": [' + b" " * (2 << 20) + b"]}"
        response = client.post(
            "/v1/policies/rules",
            content=body,
            headers={**token("root", "admin"), "content-type": "application/json"},
        )
        assert response.status_code == 413
        assert response.json()["error"]["code"] == "payload_too_large"

    def test_an_oversized_chunked_body_is_refused_while_read(self, client, token):
        def chunks():
            yield b'{"rules": ['
            for _ in range(64):
                yield b" " * 65536
            yield b"]}"

        response = client.post(
            "/v1/policies/rules",
            content=chunks(),
            headers={**token("root", "admin"), "content-type": "application/json"},
        )
        assert response.status_code == 413
