"""Providers as governed objects (issue 18 §1): global, so registered and retired by the
platform admin only (no tenant's admin retires what every tenant exports to), validated
with a reason, retired rather than deleted, every change audited in its own transaction on
the platform's trail, and the secret never stored, returned or logged."""

from __future__ import annotations

import logging
import os

import pytest
import structlog
from sqlalchemy import MetaData, text
from sqlmodel import Session, select

from audit.models import AuditQueued
from gateway.authz import Authorized, decide
from gateway.base_models.models import RegisteredBaseModel
from gateway.config import Settings
from gateway.db import make_engine
from gateway.errors import GatewayError
from gateway.models import metadata
from gateway.providers import service
from gateway.providers.credentials import credential_dirs, read_secret
from gateway.providers.models import Provider, ProviderModel
from gateway.providers.schemas import ProviderCreate
from gateway.security import Principal
from policies.vocabulary import PLATFORM_ADMIN_ROLE, PLATFORM_TENANT
from tests.gateway.providers.conftest import PROVIDER

TENANTS = ("default", "acme")


def _events(client, headers, **params) -> list[dict]:
    response = client.get("/v1/audit/events", params=params, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()["data"]


class TestRegister:
    def test_the_platform_admin_registers_a_provider(self, client, people, acme, secret):
        assert acme["id"] == acme["name"] == "acme"
        assert acme["object"] == "provider"
        assert acme["status"] == "active"
        assert acme["kind"] == "openai-compatible"
        assert acme["base_url"] == "https://api.acme.example/v1"
        assert acme["regions"] == ["eu-west-1"]
        assert acme["models"] == PROVIDER["models"]
        assert acme["credential_ref"] == "env:TUNEGATE_PROVIDER_ACME_KEY"
        assert acme["registered_by"] == "root" and acme["retired_at"] is None
        shown = client.get("/v1/providers/acme", headers=people["bob"])
        assert shown.status_code == 200 and shown.json() == acme
        assert secret not in shown.text

    def test_the_models_read_back_as_registered(self, client, people, register):
        offered = [
            {"name": "zeta-m", "provider_model": "org/zeta"},
            {"name": "alpha-m", "provider_model": "org/alpha"},
        ]
        created = register(models=offered)
        assert created.status_code == 201, created.text
        assert created.json()["models"] == sorted(offered, key=lambda m: m["name"])
        assert client.get("/v1/providers/acme", headers=people["ada"]).json() == created.json()

    @pytest.mark.parametrize("who", ["ada", "bob", "carol", "dora"])
    def test_only_the_platform_admin_registers(self, client, people, register, who):
        refused = register(headers=people[who])
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "permission_denied"
        assert client.get("/v1/providers/acme", headers=people["ada"]).status_code == 404

    def test_who_reads_them(self, client, people, acme):
        for who in ("ada", "bob", "carol"):
            assert client.get("/v1/providers", headers=people[who]).status_code == 200
        assert client.get("/v1/providers", headers=people["dora"]).status_code == 403
        assert client.get("/v1/providers/acme", headers=people["dora"]).status_code == 403

    @pytest.mark.parametrize(
        ("overrides", "param", "says"),
        [
            ({"name": "Acme"}, "name", "pattern"),
            ({"name": "-acme"}, "name", "pattern"),
            ({"name": "a" * 65}, "name", ""),
            ({"base_url": "http://api.acme.example/v1"}, "base_url", "https"),
            ({"base_url": "ftp://api.acme.example"}, "base_url", "https"),
            ({"base_url": "api.acme.example/v1"}, "base_url", "absolute"),
            ({"base_url": "https://u:pw@api.acme.example/v1"}, "base_url", "credentials"),
            ({"base_url": "https://api.acme.example/v1?key=1"}, "base_url", "query"),
            ({"base_url": "https://api.acme.example/v1#x"}, "base_url", "fragment"),
            ({"base_url": "https://api acme.example"}, "base_url", "whitespace"),
            ({"base_url": "https://api.acme.example:99999"}, "base_url", "valid URL"),
            ({"base_url": "https://bad_host!/v1"}, "base_url", "host"),
            ({"kind": "anthropic"}, "kind", "openai-compatible"),
            ({"models": []}, "models", "at least 1"),
            ({"models": [{"name": "../x", "provider_model": "m"}]}, "models.0.name", "pattern"),
            (
                {"models": [{"name": "x", "provider_model": "has space"}]},
                "models.0.provider_model",
                "",
            ),
            ({"models": [{"name": "x"}]}, "models.0.provider_model", "required"),
            ({"regions": []}, "regions", "at least 1"),
            ({"regions": ["EU"]}, "regions.0", "pattern"),
            ({"credential_ref": "sk-live-abc"}, "credential_ref", "pattern"),
            ({"credential_ref": "env:TUNEGATE_JWT_SECRET"}, "credential_ref", "pattern"),
            ({"credential_ref": "env:HOME"}, "credential_ref", "pattern"),
            ({"credential_ref": "file:relative/key"}, "credential_ref", "pattern"),
            ({"api_key": "sk-live-abc"}, "api_key", "not permitted"),
        ],
    )
    def test_bad_bodies_get_400_with_the_reason(self, register, overrides, param, says):
        response = register(**overrides)
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["code"] == "invalid_request"
        assert error["param"] == param
        assert says in error["message"]

    @pytest.mark.parametrize(
        ("overrides", "says"),
        [
            (
                {
                    "models": [
                        {"name": "x", "provider_model": "a"},
                        {"name": "x", "provider_model": "b"},
                    ]
                },
                "models has duplicate names",
            ),
            ({"regions": ["eu", "eu"]}, "regions has duplicates"),
        ],
    )
    def test_duplicates_get_400(self, register, overrides, says):
        response = register(**overrides)
        assert response.status_code == 400
        assert says in response.json()["error"]["message"]

    @pytest.mark.parametrize(
        "url", ["http://localhost:8123/v1", "http://127.0.0.1:8123", "http://[::1]:8123/v1/"]
    )
    def test_http_only_for_this_machine(self, register, url):
        response = register(base_url=url)
        assert response.status_code == 201, response.text
        assert response.json()["base_url"] == url.rstrip("/")

    def test_the_credential_must_be_there(self, register, monkeypatch):
        monkeypatch.delenv("TUNEGATE_PROVIDER_ACME_KEY")
        unset = register()
        assert unset.status_code == 400
        assert unset.json()["error"]["code"] == "credential_unavailable"
        assert unset.json()["error"]["param"] == "credential_ref"
        monkeypatch.setenv("TUNEGATE_PROVIDER_ACME_KEY", "  \n")
        assert register().json()["error"]["code"] == "credential_unavailable"

    def test_a_file_credential_inside_the_credentials_directory(
        self, register, credentials_dir, tmp_path
    ):
        key = credentials_dir / "acme.key"
        key.write_text("sk-from-a-file\n")
        assert register(credential_ref=f"file:{key}").status_code == 201
        # an operator's symlink in the directory is followed
        elsewhere = tmp_path / "mounted-secrets"
        elsewhere.mkdir()
        (elsewhere / "beta").write_text("sk-beta")
        (credentials_dir / "beta.key").symlink_to(elsewhere / "beta")
        linked = register(
            name="beta",
            models=[{"name": "beta-m", "provider_model": "m"}],
            credential_ref=f"file:{credentials_dir / 'beta.key'}",
        )
        assert linked.status_code == 201, linked.text

    @pytest.mark.parametrize(
        ("where", "code"),
        [
            ("outside", "credential_not_allowed"),
            ("dotdot", "credential_not_allowed"),
            ("subdirectory", "credential_not_allowed"),
            ("missing", "credential_unavailable"),
            ("directory", "credential_unavailable"),
            ("too_large", "credential_unavailable"),
            ("not_text", "credential_unavailable"),
        ],
    )
    def test_file_credentials_elsewhere_are_refused(
        self, register, credentials_dir, tmp_path, where, code
    ):
        outside = tmp_path / "outside.key"
        outside.write_text("sk-outside")
        (credentials_dir / "sub").mkdir()
        (credentials_dir / "sub" / "k").write_text("sk-sub")
        (credentials_dir / "big").write_bytes(b"x" * (16 * 1024 + 1))
        (credentials_dir / "binary").write_bytes(b"\xff\xfe\x00")
        path = {
            "outside": outside,
            "dotdot": f"{credentials_dir}/../outside.key",
            "subdirectory": credentials_dir / "sub" / "k",
            "missing": credentials_dir / "nothing-here",
            "directory": credentials_dir / "sub",
            "too_large": credentials_dir / "big",
            "not_text": credentials_dir / "binary",
        }[where]
        response = register(credential_ref=f"file:{path}")
        assert response.status_code == 400, response.text
        assert response.json()["error"]["code"] == code
        assert "sk-" not in response.text

    def test_names_are_never_reused(self, client, root, acme, register):
        again = register()
        assert again.status_code == 409 and again.json()["error"]["code"] == "provider_exists"
        assert client.delete("/v1/providers/acme", headers=root).status_code == 200
        after = register(models=[{"name": "other", "provider_model": "m"}])
        assert after.status_code == 409 and after.json()["error"]["code"] == "provider_exists"

    def test_model_names_are_unique_across_providers_and_base_models(
        self, register, acme, gateway_settings
    ):
        clash = register(name="beta")  # offers acme-llama-8b too
        assert clash.status_code == 409
        assert clash.json()["error"]["code"] == "provider_model_exists"
        assert clash.json()["error"]["details"] == {"names": ["acme-llama-8b"]}
        engine = make_engine(gateway_settings.database_url)
        with Session(engine) as session:
            session.add(
                RegisteredBaseModel(
                    name="tiny-llama",
                    status="active",
                    license="apache-2.0",
                    source_kind="directory",
                    source="/models/tiny-llama",
                    manifest_sha256="0" * 64,
                    registered_by="ada",
                    created_at=0,
                )
            )
            session.commit()
        engine.dispose()
        based = register(name="beta", models=[{"name": "tiny-llama", "provider_model": "m"}])
        assert based.status_code == 409
        assert based.json()["error"]["details"] == {"names": ["tiny-llama"]}

    def test_unknown_or_malformed_names_are_404(self, client, people):
        for name in ("nobody", "Not_A_Slug"):
            response = client.get(f"/v1/providers/{name}", headers=people["ada"])
            assert response.status_code == 404
            assert response.json()["error"]["code"] == "provider_not_found"


class TestRetire:
    def test_delete_retires_and_keeps_the_record(self, client, people, root, acme):
        for who in ("ada", "bob", "carol"):
            refused = client.delete("/v1/providers/acme", headers=people[who])
            assert refused.status_code == 403
        retired = client.delete("/v1/providers/acme", headers=root)
        assert retired.status_code == 200, retired.text
        body = retired.json()
        assert body["status"] == "retired" and body["retired_by"] == "root"
        assert body["models"] == acme["models"]
        assert client.get("/v1/providers/acme", headers=people["bob"]).json() == body
        twice = client.delete("/v1/providers/acme", headers=root)
        assert twice.status_code == 409
        assert twice.json()["error"]["code"] == "provider_retired"
        assert client.delete("/v1/providers/nobody", headers=root).status_code == 404


class TestOnlyThePlatformAdmin:
    """Providers are global: every tenant may export to one, so no tenant's admin registers
    or retires one; the platform admin (tenant `platform`, role `platform-admin`) does."""

    @pytest.fixture
    def admins(self, token) -> dict[str, dict]:
        return {tenant: token(f"admin-{tenant}", "admin", tenant=tenant) for tenant in TENANTS}

    def test_every_tenants_admin_is_refused_and_the_platform_admin_is_not(
        self, client, root, register, admins
    ):
        for tenant, headers in admins.items():
            refused = register(headers=headers)
            assert refused.status_code == 403, (tenant, refused.text)
            assert refused.json()["error"]["code"] == "permission_denied"
        assert client.get("/v1/providers/acme", headers=root).status_code == 404
        registered = register()
        assert registered.status_code == 201, registered.text
        for tenant, headers in admins.items():
            # each tenant's admin sees it, and cannot retire it
            assert client.get("/v1/providers/acme", headers=headers).status_code == 200
            refused = client.delete("/v1/providers/acme", headers=headers)
            assert refused.status_code == 403, (tenant, refused.text)
            assert refused.json()["error"]["code"] == "permission_denied"
            assert client.get("/v1/providers/acme", headers=headers).json()["status"] == "active"
        retired = client.delete("/v1/providers/acme", headers=root)
        assert retired.status_code == 200, retired.text
        assert retired.json()["retired_by"] == "root"
        # each refusal is a denial on the refused admin's own tenant's trail
        for tenant, headers in admins.items():
            denied = _events(client, headers, action="authz.denied", resource="provider:acme")
            assert {(e["tenant"], e["details"]["act"]) for e in denied} == {(tenant, "delete")}

    def test_a_platform_token_without_the_role_changes_nothing(self, client, token, acme):
        nobody = token("eve", "admin", tenant=PLATFORM_TENANT)
        assert client.delete("/v1/providers/acme", headers=nobody).status_code == 403
        again = {**PROVIDER, "name": "beta", "models": [{"name": "b", "provider_model": "m"}]}
        assert client.post("/v1/providers", json=again, headers=nobody).status_code == 403


class TestList:
    def test_pages_in_name_order_with_a_status_filter(self, client, people, root, register):
        for name in ("gamma", "alpha", "beta"):
            response = register(name=name, models=[{"name": f"{name}-m", "provider_model": "m"}])
            assert response.status_code == 201
        assert client.delete("/v1/providers/beta", headers=root).status_code == 200
        first = client.get("/v1/providers", params={"limit": 2}, headers=people["bob"]).json()
        assert [p["name"] for p in first["data"]] == ["alpha", "beta"]
        assert first["has_more"] is True and first["next_after"] == "beta"
        assert first["data"][0]["models"] == [{"name": "alpha-m", "provider_model": "m"}]
        rest = client.get(
            "/v1/providers", params={"limit": 2, "after": "beta"}, headers=people["bob"]
        ).json()
        assert [p["name"] for p in rest["data"]] == ["gamma"] and rest["has_more"] is False
        active = client.get("/v1/providers", params={"status": "active"}, headers=people["bob"])
        assert [p["name"] for p in active.json()["data"]] == ["alpha", "gamma"]
        bad = client.get("/v1/providers", params={"after": "x y"}, headers=people["bob"])
        assert bad.status_code == 400

    def test_a_listing_never_shows_what_a_read_refuses(self, client, people, register, grant):
        register(name="alpha", models=[{"name": "alpha-m", "provider_model": "m"}])
        register(name="beta", models=[{"name": "beta-m", "provider_model": "m"}])
        grant("bob", "provider:beta", "read", effect="deny")
        listed = client.get("/v1/providers", headers=people["bob"]).json()["data"]
        assert [p["name"] for p in listed] == ["alpha"]
        assert client.get("/v1/providers/beta", headers=people["bob"]).status_code == 403


class TestAudit:
    def test_registration_and_retirement_are_audited(self, client, people, root, acme):
        assert client.delete("/v1/providers/acme", headers=root).status_code == 200
        events = _events(client, root, resource="provider:acme")
        assert [e["action"] for e in events] == ["provider.registered", "provider.retired"]
        registered = events[0]
        assert registered["actor"] == "root" and registered["decision"] == "allow"
        # on the platform's trail, not on any tenant's
        assert {e["tenant"] for e in events} == {PLATFORM_TENANT}
        assert _events(client, people["carol"], resource="provider:acme") == []
        assert registered["policy_version"]
        assert registered["details"]["rule"] == [
            f"role:{PLATFORM_ADMIN_ROLE}",
            PLATFORM_TENANT,
            "provider:*",
            "create",
            "allow",
        ]
        assert registered["details"]["credential_ref"] == "env:TUNEGATE_PROVIDER_ACME_KEY"
        assert registered["details"]["models"] == PROVIDER["models"]
        assert events[1]["details"]["act"] == "delete"

    def test_the_audit_event_lands_in_the_same_transaction(self, client, secret):
        state = client.app.state.gateway
        root = Principal(sub="root", tenant=PLATFORM_TENANT, roles=(PLATFORM_ADMIN_ROLE,))
        authorized = decide(
            state.policy, root, "provider:*", "create", route="/v1/providers", method="POST"
        )
        assert isinstance(authorized, Authorized)
        body = ProviderCreate.model_validate(PROVIDER)

        def stored(session: Session) -> tuple[int, int]:
            providers = len(session.exec(select(Provider)).all())
            queued = session.exec(select(AuditQueued)).all()
            events = session.exec(
                text("SELECT count(*) FROM audit_events WHERE resource = 'provider:acme'")
            ).one()[0]
            return providers, sum(1 for q in queued if q.resource == "provider:acme") + events

        with Session(state.engine) as session:
            service.register(session, state=state, authorized=authorized, body=body)
            assert stored(session) == (1, 1)  # both written, in one transaction
            session.rollback()
            assert stored(session) == (0, 0)  # and both gone with it
        with Session(state.engine) as session:
            service.register(session, state=state, authorized=authorized, body=body)
            session.commit()
        state.flush_audit_queue()
        with Session(state.engine) as session:
            assert stored(session) == (1, 1)

    def test_a_refused_registration_leaves_nothing(self, client, root, acme, register):
        clash = register(name="beta", models=[{"name": "acme-llama-8b", "provider_model": "m"}])
        assert clash.status_code == 409
        assert client.get("/v1/providers/beta", headers=root).status_code == 404
        assert _events(client, root, resource="provider:beta") == []


class TestTheSecretGoesNowhere:
    def _everything_stored(self, settings) -> str:
        """Every row of every table, as text."""
        engine = make_engine(settings.database_url)
        dumped = []
        tables = MetaData()
        tables.reflect(engine)
        with engine.connect() as connection:
            for table in tables.sorted_tables:
                rows = connection.execute(select(table)).all()
                dumped += [repr(tuple(row)) for row in rows]
        assert {"providers", "provider_models", "audit_events"} <= set(tables.tables)
        engine.dispose()
        return "\n".join(dumped)

    def test_never_stored_returned_or_logged(
        self,
        client,
        people,
        root,
        register,
        secret,
        credentials_dir,
        gateway_settings,
        caplog,
        approved_source,
    ):
        file_secret = "sk-file-" + os.urandom(8).hex()
        (credentials_dir / "beta.key").write_text(file_secret + "\n")
        source = approved_source()
        answers = []
        caplog.set_level(logging.DEBUG)
        with structlog.testing.capture_logs() as logs:
            answers.append(register())
            answers.append(
                register(
                    name="beta",
                    models=[{"name": "beta-m", "provider_model": "m"}],
                    credential_ref=f"file:{credentials_dir / 'beta.key'}",
                )
            )
            answers.append(client.get("/v1/providers", headers=people["ada"]))
            answers.append(client.get("/v1/providers/acme", headers=people["ada"]))
            answers.append(
                client.post(
                    "/v1/providers/acme/export_check",
                    json={"data_source": source["id"]},
                    headers=people["bob"],
                )
            )
            answers.append(client.delete("/v1/providers/beta", headers=root))
            answers.append(client.get("/v1/audit/events", headers=people["carol"]))
            answers.append(client.get("/v1/audit/events", headers=root))
            answers.append(client.get("/openapi.json"))
        assert [a.status_code for a in answers] == [201, 201, 200, 200, 200, 200, 200, 200, 200]
        assert any(entry["event"] == "provider.registered" for entry in logs)
        for value in (secret, file_secret):
            for answer in answers:
                assert value not in answer.text
            assert value not in repr(logs)
            assert value not in caplog.text
            assert value not in self._everything_stored(gateway_settings)

    def test_no_column_could_hold_it(self):
        columns = {c.name for c in metadata.tables["providers"].columns}
        assert "credential_ref" in columns
        assert not columns & {"api_key", "secret", "credential", "token", "password"}
        assert {c.name for c in metadata.tables["provider_models"].columns} == {
            "name",
            "provider",
            "provider_model",
        }

    def test_the_read_secret_hides_itself(self, secret, gateway_settings):
        directories = credential_dirs(gateway_settings)
        value = read_secret("env:TUNEGATE_PROVIDER_ACME_KEY", directories=directories)
        assert value.get_secret_value() == secret
        assert secret not in repr(value) and secret not in str(value)
        with pytest.raises(GatewayError) as refused:
            read_secret("env:HOME", directories=directories)
        assert refused.value.code == "credential_not_allowed"


def test_provider_models_reference_their_provider(client, acme):
    state = client.app.state.gateway
    with Session(state.engine) as session:
        [model] = session.exec(select(ProviderModel)).all()
    assert (model.name, model.provider, model.provider_model) == (
        "acme-llama-8b",
        "acme",
        "meta-llama/Meta-Llama-3.1-8B-Instruct",
    )


class TestCredentialDirectories:
    """`provider_credential_dirs`: where `file:` credentials may lie, the operator's list."""

    def test_by_default_the_directory_beside_the_artifacts(self, gateway_settings, credentials_dir):
        assert gateway_settings.provider_credential_dirs is None
        assert credential_dirs(gateway_settings) == [credentials_dir]

    def test_the_configured_directories_and_no_other(self, client, tmp_path, credentials_dir):
        first, second = tmp_path / "secrets-a", tmp_path / "secrets-b"
        for directory in (first, second):
            directory.mkdir()
            (directory / "key").write_text(f"sk-{directory.name}")
        (credentials_dir / "key").write_text("sk-default")
        settings = Settings(provider_credential_dirs=[first, second])
        assert credential_dirs(settings) == [first.resolve(), second.resolve()]
        read = read_secret(f"file:{second / 'key'}", directories=credential_dirs(settings))
        assert read.get_secret_value() == "sk-secrets-b"
        for elsewhere in (credentials_dir / "key", tmp_path / "key"):
            with pytest.raises(GatewayError) as refused:
                read_secret(f"file:{elsewhere}", directories=credential_dirs(settings))
            assert refused.value.code == "credential_not_allowed"

    def test_an_empty_list_reads_no_file(self, credentials_dir):
        (credentials_dir / "key").write_text("sk-default")
        settings = Settings(provider_credential_dirs=[])
        with pytest.raises(GatewayError) as refused:
            read_secret(f"file:{credentials_dir / 'key'}", directories=credential_dirs(settings))
        assert refused.value.code == "credential_not_allowed"

    def test_registering_reads_the_configured_ones(
        self, gateway_settings, secret, token, tmp_path, credentials_dir
    ):
        from fastapi.testclient import TestClient

        from gateway.main import create_app

        mounted = tmp_path / "mounted"
        mounted.mkdir()
        (mounted / "acme.key").write_text("sk-mounted")
        (credentials_dir / "acme.key").write_text("sk-default")
        settings = gateway_settings.model_copy(update={"provider_credential_dirs": [mounted]})
        root = token("root", PLATFORM_ADMIN_ROLE, tenant=PLATFORM_TENANT)
        with TestClient(create_app(settings)) as client:
            beside = {**PROVIDER, "credential_ref": f"file:{credentials_dir / 'acme.key'}"}
            refused = client.post("/v1/providers", json=beside, headers=root)
            assert refused.status_code == 400, refused.text
            assert refused.json()["error"]["code"] == "credential_not_allowed"
            inside = {**PROVIDER, "credential_ref": f"file:{mounted / 'acme.key'}"}
            registered = client.post("/v1/providers", json=inside, headers=root)
            assert registered.status_code == 201, registered.text
