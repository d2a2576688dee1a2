"""Tenancy of shared objects (issue 19 §4).

Tenants are names the platform knows: a token whose tenant claim is not a registered
tenant, spelled as registered, is refused with 401 `unknown_tenant` instead of becoming a
separate, empty tenant. Base models are global (the platform admin's, seen by every tenant,
retired by the platform admin only) or a tenant's own (seen in that tenant only)."""

from __future__ import annotations

import time
from typing import Any

import jwt
import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from gateway.config import DEV_JWT_SECRET, Settings
from gateway.security import (
    AuthenticationError,
    TokenMintingError,
    TokenVerifier,
    mint_dev_token,
)
from policies.vocabulary import PLATFORM_ADMIN_ROLE, PLATFORM_TENANT
from tests.conftest import TEST_TENANTS
from tests.gateway.conftest import TINY_BASE

# --- registered tenants ------------------------------------------------------------------


def _raw_token(settings: Settings, **claims: Any) -> dict[str, str]:
    """A validly signed dev token with whatever claims, as a client could forge them with
    the secret (mint_dev_token refuses to write these)."""
    now = int(time.time())
    payload = {
        "sub": "mallory",
        "roles": ["admin"],
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "iat": now,
        "exp": now + 600,
        **claims,
    }
    payload = {name: value for name, value in payload.items() if value is not _DROP}
    token = jwt.encode(payload, settings.effective_jwt_secret or DEV_JWT_SECRET, algorithm="HS256")
    return {"Authorization": f"Bearer {token}"}


_DROP = object()

UNKNOWN_TENANTS = [
    "ACME",  # beside the registered `acme`
    "Acme",
    "*",
    ["acme"],
    "acme\n",
    " acme",
    "acme ",
    "",
    "nobody",  # well formed, never registered
    "acme,default",
    "ａｃｍｅ",  # fullwidth look-alike
    "acme\u200b",
    None,
    5,
    {"name": "acme"},
    "PLATFORM",
]


class TestRegisteredTenants:
    def test_the_suite_registers_the_tenants_its_tokens_name(self, gateway_settings):
        assert gateway_settings.tenants == TEST_TENANTS

    @pytest.mark.parametrize("tenant", UNKNOWN_TENANTS, ids=repr)
    def test_a_tenant_claim_that_is_not_registered_is_401(self, client, gateway_settings, tenant):
        response = client.get(
            "/v1/base_models", headers=_raw_token(gateway_settings, tenant=tenant)
        )
        assert response.status_code == 401, response.text
        assert response.json()["error"]["code"] == "unknown_tenant"
        assert response.headers["www-authenticate"].startswith('Bearer realm="tunegate", error=')

    @pytest.mark.parametrize("tenant", ["acme", "default", PLATFORM_TENANT])
    def test_registered_tenants_and_the_platform_domain_are_accepted(
        self, client, gateway_settings, tenant
    ):
        headers = _raw_token(gateway_settings, tenant=tenant)
        assert client.get("/v1/base_models", headers=headers).status_code == 200

    def test_no_tenant_claim_means_default_which_must_be_registered_too(self, gateway_settings):
        headers = _raw_token(gateway_settings, tenant=_DROP)["Authorization"]
        assert TokenVerifier(gateway_settings).verify(headers).tenant == "default"
        elsewhere = gateway_settings.model_copy(update={"tenants": ["acme"]})
        with pytest.raises(AuthenticationError) as caught:
            TokenVerifier(elsewhere).verify(headers)
        assert caught.value.reason == "unknown_tenant"

    def test_the_refusal_is_counted_and_not_an_empty_tenant(self, client, gateway_settings):
        # Before: `ACME` was accepted as a tenant of its own with nothing in it. Now it does
        # not reach a route at all, so nothing can be created under it either.
        forged = _raw_token(gateway_settings, tenant="ACME", roles=["data-owner"])
        body = {"name": "x", "classification": "internal", "owner": "dora"}
        response = client.post("/v1/data_sources", json=body, headers=forged)
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "unknown_tenant"
        metrics = client.get("/metrics").text
        assert 'reason="unknown_tenant"' in metrics


class TestTenantSettings:
    @pytest.mark.parametrize(
        "names", [["ACME"], ["acme "], [""], ["a/b"], ["-acme"], ["t" * 65], [PLATFORM_TENANT]]
    )
    def test_a_name_that_is_not_canonical_or_is_reserved_is_refused(self, names):
        with pytest.raises(ValidationError):
            Settings(tenants=names)

    def test_names_are_kept_once_in_order(self):
        assert Settings(tenants=["b", "a", "b"]).tenants == ["b", "a"]

    def test_the_environment_lists_them_as_json(self, monkeypatch):
        monkeypatch.setenv("TUNEGATE_TENANTS", '["acme", "globex"]')
        assert Settings().tenants == ["acme", "globex"]

    def test_the_default_deployment_knows_default(self, monkeypatch):
        monkeypatch.delenv("TUNEGATE_TENANTS")
        assert Settings().tenants == ["default"]


class TestDevTokens:
    def test_minting_refuses_an_unregistered_tenant(self, gateway_settings):
        for tenant in ("ACME", "nobody", "*", "acme\n"):
            with pytest.raises(TokenMintingError, match="TUNEGATE_TENANTS"):
                mint_dev_token(gateway_settings, sub="ada", roles=["admin"], tenant=tenant)

    def test_tunegate_token_says_which_tenants_are_registered(self, monkeypatch):
        from gateway.cli import app
        from gateway.config import get_settings

        monkeypatch.setenv("TUNEGATE_TENANTS", '["acme"]')
        get_settings.cache_clear()
        try:
            runner = CliRunner()
            refused = runner.invoke(app, ["token", "--sub", "ada", "--tenant", "globex"])
            assert refused.exit_code == 2
            assert "globex" in refused.output and "acme" in refused.output
            minted = runner.invoke(
                app, ["token", "--sub", "op", "--role", PLATFORM_ADMIN_ROLE, "--tenant", "platform"]
            )
            assert minted.exit_code == 0, minted.output
            principal = TokenVerifier(get_settings()).verify(f"Bearer {minted.stdout.strip()}")
            assert principal.platform and principal.roles == (PLATFORM_ADMIN_ROLE,)
        finally:
            get_settings.cache_clear()


# --- base models: global and a tenant's own ----------------------------------------------


@pytest.fixture
def gateway_settings(gateway_settings, tiny_model_root):
    return gateway_settings.model_copy(update={"model_import_roots": [tiny_model_root]})


@pytest.fixture
def cast(token):
    return {
        "root": token("root", PLATFORM_ADMIN_ROLE, tenant=PLATFORM_TENANT),
        "ada": token("ada", "admin", tenant="acme"),
        "bob": token("bob", "ml-engineer", tenant="acme"),
        "otto": token("otto", "admin", tenant="other"),
        "olga": token("olga", "ml-engineer", tenant="other"),
        "dean": token("dean", "admin"),  # tenant default
    }


def _register(client, headers, name: str, tiny_model_root) -> Any:
    body = {
        "name": name,
        "license": "apache-2.0",
        "source": {"directory": str(tiny_model_root / TINY_BASE)},
    }
    return client.post("/v1/base_models", json=body, headers=headers)


def _code(response) -> str:
    return response.json()["error"]["code"]


def _names(client, headers, path: str = "/v1/base_models") -> set[str]:
    response = client.get(path, headers=headers)
    assert response.status_code == 200, response.text
    return {row["id"] for row in response.json()["data"]}


def _events(client, headers, **params) -> list[dict]:
    response = client.get("/v1/audit/events", params=params, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()["data"]


class TestGlobalBaseModels:
    def test_the_platform_admin_registers_a_global_one_every_tenant_sees(
        self, client, cast, tiny_model_root
    ):
        registered = _register(client, cast["root"], "shared", tiny_model_root)
        assert registered.status_code == 201, registered.text
        assert registered.json()["tenant"] is None
        for who in ("bob", "olga", "dean"):
            assert "shared" in _names(client, cast[who])
            assert "shared" in _names(client, cast[who], "/v1/models")
            one = client.get("/v1/base_models/shared", headers=cast[who])
            assert one.status_code == 200 and one.json()["tenant"] is None

    def test_another_tenants_admin_cannot_retire_it(self, client, cast, tiny_model_root):
        assert _register(client, cast["root"], "shared", tiny_model_root).status_code == 201
        for admin in ("ada", "otto", "dean"):
            refused = client.post("/v1/base_models/shared/retire", headers=cast[admin])
            assert refused.status_code == 403, refused.text
            error = refused.json()["error"]
            assert error["code"] == "platform_admin_required"
            assert error["details"]["object"] == "base:shared"
            assert error["details"]["scope"] == "global"
        # an engineer is refused by their own tenant's policy first
        engineer = client.post("/v1/base_models/shared/retire", headers=cast["bob"])
        assert engineer.status_code == 403 and _code(engineer) == "permission_denied"
        still = client.get("/v1/base_models/shared", headers=cast["olga"]).json()
        assert still["status"] == "active" and still["retired_by"] is None
        # each refusal is a denial on the refused tenant's trail
        (denied,) = _events(
            client, cast["ada"], action="authz.denied", resource="base:shared", actor="ada"
        )
        assert denied["actor"] == "ada" and denied["tenant"] == "acme"
        assert denied["decision"] == "deny" and denied["details"]["act"] == "retire"

    def test_the_platform_admin_retires_it(self, client, cast, tiny_model_root):
        assert _register(client, cast["root"], "shared", tiny_model_root).status_code == 201
        retired = client.post("/v1/base_models/shared/retire", headers=cast["root"])
        assert retired.status_code == 200, retired.text
        assert retired.json()["status"] == "retired" and retired.json()["retired_by"] == "root"
        seen = client.get("/v1/base_models/shared", headers=cast["bob"]).json()
        assert seen["status"] == "retired"
        (event,) = _events(client, cast["root"], action="base_model.retired")
        assert event["tenant"] == PLATFORM_TENANT and event["resource"] == "base:shared"
        assert event["details"]["tenant"] is None

    def test_a_platform_token_without_the_role_changes_nothing(
        self, client, token, cast, tiny_model_root
    ):
        assert _register(client, cast["root"], "shared", tiny_model_root).status_code == 201
        nobody = token("eve", "ml-engineer", tenant=PLATFORM_TENANT)
        refused = client.post("/v1/base_models/shared/retire", headers=nobody)
        assert refused.status_code == 403 and _code(refused) == "permission_denied"


class TestTenantBaseModels:
    def test_a_tenant_admin_registers_one_for_their_tenant_only(
        self, client, cast, tiny_model_root
    ):
        registered = _register(client, cast["ada"], "acme-tiny", tiny_model_root)
        assert registered.status_code == 201, registered.text
        assert registered.json()["tenant"] == "acme"
        (event,) = _events(client, cast["ada"], action="base_model.registered")
        assert event["details"]["tenant"] == "acme"
        # seen in acme
        assert "acme-tiny" in _names(client, cast["bob"])
        assert "acme-tiny" in _names(client, cast["bob"], "/v1/models")
        assert client.get("/v1/base_models/acme-tiny", headers=cast["bob"]).status_code == 200
        # and by the platform admin, who sees whose it is
        assert client.get("/v1/base_models/acme-tiny", headers=cast["root"]).json()["tenant"] == (
            "acme"
        )

    def test_it_is_invisible_to_other_tenants(self, client, cast, tiny_model_root):
        assert _register(client, cast["ada"], "acme-tiny", tiny_model_root).status_code == 201
        for who in ("olga", "otto", "dean"):
            assert "acme-tiny" not in _names(client, cast[who])
            assert "acme-tiny" not in _names(client, cast[who], "/v1/models")
            one = client.get("/v1/base_models/acme-tiny", headers=cast[who])
            assert one.status_code == 404 and _code(one) == "base_model_not_found"
            via_models = client.get("/v1/models/acme-tiny", headers=cast[who])
            assert via_models.status_code == 404 and _code(via_models) == "model_not_found"
        # as absent as a name nobody registered, retire included
        other = client.post("/v1/base_models/acme-tiny/retire", headers=cast["otto"])
        nothing = client.post("/v1/base_models/no-such/retire", headers=cast["otto"])
        assert other.status_code == nothing.status_code == 404
        assert _code(other) == _code(nothing) == "base_model_not_found"
        assert client.get("/v1/base_models/acme-tiny", headers=cast["bob"]).json()["status"] == (
            "active"
        )

    def test_other_tenants_cannot_train_on_or_call_it(self, client, cast, tiny_model_root):
        assert _register(client, cast["ada"], "acme-tiny", tiny_model_root).status_code == 201
        body = {
            "model": "acme-tiny",
            "training_file": "file-0123456789abcdef01234567",
            "purpose": "support",
        }
        refused = client.post("/v1/fine_tuning/jobs", json=body, headers=cast["olga"])
        assert refused.status_code == 404 and _code(refused) == "model_not_found", refused.text
        chat = {"model": "acme-tiny", "messages": [{"role": "user", "content": "hi"}]}
        called = client.post("/v1/chat/completions", json=chat, headers=cast["olga"])
        assert called.status_code == 404 and _code(called) == "model_not_found", called.text

    def test_its_tenant_admin_retires_it(self, client, cast, tiny_model_root):
        assert _register(client, cast["ada"], "acme-tiny", tiny_model_root).status_code == 201
        retired = client.post("/v1/base_models/acme-tiny/retire", headers=cast["ada"])
        assert retired.status_code == 200, retired.text
        assert retired.json()["status"] == "retired" and retired.json()["retired_by"] == "ada"

    def test_names_are_one_namespace(self, client, cast, tiny_model_root):
        # names are never reused, whoever registered them, so lineage citing one is one model
        assert _register(client, cast["ada"], "taken", tiny_model_root).status_code == 201
        again = _register(client, cast["otto"], "taken", tiny_model_root)
        assert again.status_code == 409 and _code(again) == "base_model_exists"

    def test_listings_mix_global_and_own(self, client, cast, tiny_model_root):
        assert _register(client, cast["root"], "shared", tiny_model_root).status_code == 201
        assert _register(client, cast["ada"], "acme-tiny", tiny_model_root).status_code == 201
        assert _register(client, cast["otto"], "other-tiny", tiny_model_root).status_code == 201
        assert _names(client, cast["bob"]) == {"shared", "acme-tiny"}
        assert _names(client, cast["olga"]) == {"shared", "other-tiny"}
        assert _names(client, cast["dean"]) == {"shared"}
        assert _names(client, cast["root"]) == {"shared", "acme-tiny", "other-tiny"}


class TestThePlatformDomain:
    def test_no_tenant_admin_can_grant_themselves_a_role_there(self, client, cast):
        rule = {"ptype": "g", "values": ["user:ada", f"role:{PLATFORM_ADMIN_ROLE}", "platform"]}
        refused = client.post("/v1/policies/rules", json={"rules": [rule]}, headers=cast["ada"])
        assert refused.status_code == 400 and _code(refused) == "rule_outside_tenant"

    def test_an_operator_adds_the_platform_rules_to_an_older_database(self, client, token):
        # what the README says for a database seeded before the platform-admin rules: a
        # `platform` token with the baseline admin role edits the rules naming `platform`
        operator = token("root", "admin", tenant=PLATFORM_TENANT)
        rule = {"ptype": "p", "values": ["user:root2", "platform", "base:*", "retire", "allow"]}
        added = client.post("/v1/policies/rules", json={"rules": [rule]}, headers=operator)
        assert added.status_code == 201, added.text
