"""Every refused token, over HTTP: 401, a `WWW-Authenticate: Bearer` challenge and a
machine-readable reason. (tests/gateway/security/ covers the verifier in depth.)"""

from __future__ import annotations

import time

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi.testclient import TestClient

from gateway.main import create_app
from tests.gateway.security.tokens import (
    DROP,
    JwksServer,
    b64json,
    claims,
    compact,
    hs256,
    hs256_signer,
    rsa_jwk,
    signed,
    with_payload,
)

SECRET = "http-test-secret-0123456789abcdef-0123"


@pytest.fixture(scope="module")
def rsa_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def jwks_server(rsa_key):
    server = JwksServer()
    server.serve(rsa_jwk(rsa_key, "key-1"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def http(gateway_settings, jwks_server, monkeypatch):
    monkeypatch.setenv("NO_PROXY", "*")
    settings = gateway_settings.model_copy(
        update={"jwt_secret": SECRET, "jwks_url": jwks_server.url}
    )
    with TestClient(create_app(settings)) as client:
        yield client


def _refusal(http, authorization: str | None) -> str:
    headers = {} if authorization is None else {"Authorization": authorization}
    response = http.get("/v1/policies/versions", headers=headers)
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"].startswith("Bearer")
    return response.json()["error"]["code"]


def _ok(**overrides) -> str:
    return hs256(claims(roles=["admin"], **overrides), secret=SECRET)


class TestRefusedTokens:
    def test_a_valid_token_passes(self, http):
        response = http.get("/v1/policies/versions", headers={"Authorization": f"Bearer {_ok()}"})
        assert response.status_code == 200

    def test_no_token(self, http):
        assert _refusal(http, None) == "token_missing"

    def test_alg_none(self, http):
        token = compact({"alg": "none", "typ": "JWT"}, claims(), lambda _: b"")
        assert _refusal(http, f"Bearer {token}") == "token_algorithm_refused"

    def test_hs256_signed_with_the_rsa_public_key_as_secret(self, http, rsa_key):
        pem = rsa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        token = compact({"alg": "HS256", "kid": "key-1"}, claims(), hs256_signer(pem))
        assert _refusal(http, f"Bearer {token}") == "token_algorithm_refused"

    def test_payload_edited_after_signing(self, http):
        token = with_payload(_ok(), claims(roles=["admin"], sub="mallory"))
        assert _refusal(http, f"Bearer {token}") == "token_signature_invalid"

    def test_expired(self, http):
        assert _refusal(http, f"Bearer {_ok(exp=int(time.time()) - 3600)}") == "token_expired"

    def test_missing_exp(self, http):
        assert _refusal(http, f"Bearer {_ok(exp=DROP)}") == "token_claims_invalid"

    def test_nbf_in_the_future(self, http):
        token = _ok(nbf=int(time.time()) + 3600)
        assert _refusal(http, f"Bearer {token}") == "token_not_yet_valid"

    def test_iat_in_the_future(self, http):
        token = _ok(iat=int(time.time()) + 3600)
        assert _refusal(http, f"Bearer {token}") == "token_not_yet_valid"

    def test_wrong_audience(self, http):
        assert _refusal(http, f"Bearer {_ok(aud='someone-else')}") == "token_audience_invalid"

    def test_issuer_that_merely_starts_with_ours(self, http):
        assert _refusal(http, f"Bearer {_ok(iss='tunegate-evil')}") == "token_issuer_invalid"

    def test_unknown_crit_header(self, http):
        token = hs256(claims(), secret=SECRET, crit=["exp-ext"], **{"exp-ext": 1})
        assert _refusal(http, f"Bearer {token}") == "token_header_invalid"

    def test_unknown_kid(self, http, rsa_key):
        token = signed(rsa_key, "RS256", "key-unknown", claims())
        assert _refusal(http, f"Bearer {token}") == "token_key_unknown"

    def test_token_over_8_kib(self, http):
        token = f"{b64json({'alg': 'HS256'})}.{'A' * 9000}.sig"
        assert _refusal(http, f"Bearer {token}") == "token_too_large"

    def test_a_provider_token_passes(self, http, rsa_key):
        token = signed(rsa_key, "RS256", "key-1", claims(roles=["admin"]))
        response = http.get("/v1/policies/versions", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 200, response.text
