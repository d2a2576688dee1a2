"""Console sign-in with OpenID Connect: authorization code + PKCE (S256) through Authlib,
the ID token checked by the gateway's JWKS verifier.

The identity provider cannot exist here, so a small one runs on loopback (real HTTP): it
serves discovery and a key set, signs ID tokens with an RSA key, and checks the PKCE
verifier against the challenge and that each code is used once, as a provider does.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from gateway.config import Settings
from tests.gateway.security.tokens import rsa_jwk

CLIENT_ID = "tunegate-console"


class Provider:
    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.codes: dict[str, dict] = {}
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.issuer = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _id_token(self, grant: dict) -> str:
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "aud": CLIENT_ID,
            "sub": "olga",
            "iat": now,
            "exp": now + 600,
            "nonce": grant["nonce"],
            "roles": ["compliance-officer"],
            "tenant": "default",
        }
        return jwt.encode(claims, self.key, algorithm="RS256", headers={"kid": "k1"})

    def _handler(self):
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_args) -> None:
                pass

            def _json(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                url = urlsplit(self.path)
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                if url.path == "/.well-known/openid-configuration":
                    return self._json(
                        200,
                        {
                            "issuer": provider.issuer,
                            "authorization_endpoint": provider.issuer + "/authorize",
                            "token_endpoint": provider.issuer + "/token",
                            "jwks_uri": provider.issuer + "/jwks",
                        },
                    )
                if url.path == "/jwks":
                    return self._json(200, {"keys": [rsa_jwk(provider.key, "k1")]})
                if url.path == "/authorize":
                    ok = (
                        query.get("response_type") == "code"
                        and query.get("client_id") == CLIENT_ID
                        and query.get("code_challenge_method") == "S256"
                        and query.get("code_challenge")
                        and query.get("nonce")
                    )
                    if not ok:
                        return self._json(400, {"error": "invalid_request"})
                    code = secrets.token_urlsafe(16)
                    provider.codes[code] = query
                    back = (
                        query["redirect_uri"]
                        + "?"
                        + urlencode({"code": code, "state": query["state"]})
                    )
                    self.send_response(302)
                    self.send_header("Location", back)
                    self.end_headers()
                    return None
                return self._json(404, {"error": "not_found"})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
                grant = provider.codes.pop(form.get("code", ""), None)  # each code once
                verifier = form.get("code_verifier", "")
                challenge = (
                    base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
                    .rstrip(b"=")
                    .decode()
                )
                if grant is None or challenge != grant["code_challenge"]:
                    return self._json(400, {"error": "invalid_grant"})
                return self._json(
                    200,
                    {
                        "access_token": "opaque",
                        "token_type": "Bearer",
                        "id_token": provider._id_token(grant),
                    },
                )

        return Handler

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture
def provider():
    running = Provider()
    yield running
    running.close()


@pytest.fixture
def oidc_client(gateway_settings, provider):
    from fastapi.testclient import TestClient

    from gateway.main import create_app

    settings = Settings(
        **{
            **gateway_settings.model_dump(),
            "jwks_url": provider.issuer + "/jwks",
            "jwt_issuer": provider.issuer,
            "jwt_audience": CLIENT_ID,
            "oidc_issuer": provider.issuer,
            "oidc_client_id": CLIENT_ID,
        }
    )
    with TestClient(create_app(settings)) as client:
        yield client


def _to_provider_and_back(client, next_path: str = "/console/audit") -> str:
    started = client.get(f"/console/login/oidc?next={next_path}", follow_redirects=False)
    assert started.status_code == 303, started.text
    answered = httpx.get(started.headers["location"], follow_redirects=False)
    assert answered.status_code == 302, answered.text
    callback = urlsplit(answered.headers["location"])
    assert callback.path == "/console/oidc/callback"
    return f"{callback.path}?{callback.query}"


def test_sign_in_with_the_provider_then_use_the_console(oidc_client):
    login = oidc_client.get("/console/login")
    assert "Sign in with your organisation" in login.text
    callback = _to_provider_and_back(oidc_client)
    signed_in = oidc_client.get(callback)
    assert signed_in.status_code == 200, signed_in.text
    assert 'content="0;url=/console/audit"' in signed_in.text
    cookie = signed_in.headers.get_list("set-cookie")
    assert any(c.startswith("tunegate_console=") and "SameSite=strict" in c for c in cookie)
    page = oidc_client.get("/console/audit")
    assert page.status_code == 200 and "olga" in page.text


def test_a_callback_from_another_browser_is_refused(oidc_client):
    callback = _to_provider_and_back(oidc_client)
    oidc_client.cookies.clear()  # the flow cookie lives in the browser that started it
    refused = oidc_client.get(callback)
    assert refused.status_code == 401 and "oidc_state_mismatch" in refused.text


def test_a_forged_state_is_refused(oidc_client):
    callback = _to_provider_and_back(oidc_client)
    forged = callback.replace("state=", "state=x")
    refused = oidc_client.get(forged)
    assert refused.status_code == 401 and "oidc_state_mismatch" in refused.text


def test_a_replayed_code_is_refused_by_the_provider(oidc_client):
    callback = _to_provider_and_back(oidc_client)
    assert oidc_client.get(callback).status_code == 200
    oidc_client.cookies.clear()
    again = _to_provider_and_back(oidc_client)
    code = parse_qs(urlsplit(callback).query)["code"][0]
    fresh_code = parse_qs(urlsplit(again).query)["code"][0]
    replayed = oidc_client.get(again.replace(fresh_code, code))
    assert replayed.status_code == 401 and "oidc_sign_in_refused" in replayed.text
