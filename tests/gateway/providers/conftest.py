"""What the provider tests share: a provider's secret in the gateway's environment, and
registering a provider as the platform admin (providers are global: only it registers and
retires them)."""

from __future__ import annotations

import secrets

import pytest

from policies.vocabulary import PLATFORM_ADMIN_ROLE, PLATFORM_TENANT

ENV_VAR = "TUNEGATE_PROVIDER_ACME_KEY"

PROVIDER = {
    "name": "acme",
    "base_url": "https://api.acme.example/v1",
    "kind": "openai-compatible",
    "models": [
        {"name": "acme-llama-8b", "provider_model": "meta-llama/Meta-Llama-3.1-8B-Instruct"}
    ],
    "regions": ["eu-west-1"],
    "credential_ref": f"env:{ENV_VAR}",
    "description": "Acme fine-tuning",
}


@pytest.fixture
def secret(monkeypatch) -> str:
    """The provider's API key, in the gateway's environment where `credential_ref` names it."""
    value = f"sk-acme-{secrets.token_hex(16)}"
    monkeypatch.setenv(ENV_VAR, value)
    return value


@pytest.fixture
def credentials_dir(gateway_settings):
    """The gateway's credentials directory (beside the artifact directory), made."""
    directory = gateway_settings.artifact_dir.resolve().parent / "credentials"
    directory.mkdir(parents=True, exist_ok=True)
    return directory


@pytest.fixture
def root(token) -> dict:
    """The platform admin's headers: a token of the platform domain."""
    return token("root", PLATFORM_ADMIN_ROLE, tenant=PLATFORM_TENANT)


@pytest.fixture
def register(client, root, secret):
    """register(**overrides) -> the response to the platform admin's POST /v1/providers."""

    def post(headers=None, **overrides):
        body = {**PROVIDER, **overrides}
        return client.post("/v1/providers", json=body, headers=headers or root)

    return post


@pytest.fixture
def acme(register) -> dict:
    response = register()
    assert response.status_code == 201, response.text
    return response.json()
