"""OpenID Connect sign-in for the console: authorization code with PKCE (S256), through
Authlib's client. The ID token it returns is checked by the gateway's own JWKS verifier
(issuer, audience = the client id, signature, expiry) and then its nonce; it becomes the
session's token.

Between the redirect to the provider and the callback, the state, the PKCE verifier, the
nonce and the page to return to live in a short-lived cookie signed by the gateway.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
from authlib.integrations.httpx_client import OAuth2Client

from gateway.config import Settings
from gateway.console.session import signing_key
from gateway.security import AuthenticationError, KeySetUnavailableError, TokenVerifier

FLOW_COOKIE = "tunegate_oidc"
FLOW_SECONDS = 600
DISCOVERY_SECONDS = 300
_discovered: dict[str, tuple[float, dict[str, Any]]] = {}


class OidcError(Exception):
    """Sign-in with the provider failed; `reason` is a catalogued code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class Started:
    authorize_url: str
    flow_cookie: str


def configured(settings: Settings) -> bool:
    return bool(settings.oidc_issuer and settings.oidc_client_id)


def metadata(issuer: str) -> dict[str, Any]:
    """The provider's discovery document, cached for a few minutes."""
    now = time.monotonic()
    cached = _discovered.get(issuer)
    if cached and now - cached[0] < DISCOVERY_SECONDS:
        return cached[1]
    url = issuer.rstrip("/") + "/.well-known/openid-configuration"
    try:
        response = httpx.get(url, timeout=10.0)
        response.raise_for_status()
        document = response.json()
    except (httpx.HTTPError, ValueError):
        raise OidcError(
            "oidc_provider_unavailable", "the sign-in provider did not answer"
        ) from None
    if not isinstance(document, dict) or document.get("issuer") != issuer:
        raise OidcError("oidc_provider_unavailable", "the provider's discovery document is wrong")
    _discovered[issuer] = (now, document)
    return document


def _client(settings: Settings, redirect_uri: str) -> OAuth2Client:
    return OAuth2Client(
        client_id=settings.oidc_client_id,
        client_secret=settings.oidc_client_secret,
        scope=settings.oidc_scope,
        redirect_uri=redirect_uri,
        code_challenge_method="S256",
        token_endpoint_auth_method="client_secret_basic" if settings.oidc_client_secret else "none",
        timeout=10.0,
    )


def begin(settings: Settings, *, redirect_uri: str, next_path: str) -> Started:
    assert settings.oidc_issuer
    document = metadata(settings.oidc_issuer)
    verifier = secrets.token_urlsafe(48)
    nonce = secrets.token_urlsafe(24)
    with _client(settings, redirect_uri) as client:
        url, state = client.create_authorization_url(
            document["authorization_endpoint"], code_verifier=verifier, nonce=nonce
        )
    flow = {
        "state": state,
        "verifier": verifier,
        "nonce": nonce,
        "next": next_path,
        "exp": int(time.time()) + FLOW_SECONDS,
    }
    return Started(url, _sealed(settings, flow))


def finish(
    settings: Settings,
    verifier: TokenVerifier,
    *,
    flow_cookie: str | None,
    code: str | None,
    state: str | None,
    redirect_uri: str,
) -> tuple[str, str]:
    """(the ID token, the page to return to), or OidcError naming what failed."""
    assert settings.oidc_issuer
    flow = _opened(settings, flow_cookie)
    if not state or not hmac.compare_digest(state, flow["state"]):
        raise OidcError("oidc_state_mismatch", "the sign-in answer does not match this browser")
    if not code:
        raise OidcError("oidc_sign_in_refused", "the provider did not sign you in")
    document = metadata(settings.oidc_issuer)
    try:
        with _client(settings, redirect_uri) as client:
            token = client.fetch_token(
                document["token_endpoint"], code=code, code_verifier=flow["verifier"]
            )
    except Exception:  # the provider refused the code or the verifier: no detail to show
        raise OidcError("oidc_sign_in_refused", "the provider refused the sign-in code") from None
    id_token = token.get("id_token")
    if not isinstance(id_token, str):
        raise OidcError("oidc_sign_in_refused", "the provider returned no ID token")
    try:
        verifier.verify(f"Bearer {id_token}")
    except (AuthenticationError, KeySetUnavailableError) as exc:
        raise OidcError(exc.reason, f"the ID token was refused: {exc.message}") from None
    nonce = jwt.decode(id_token, options={"verify_signature": False}).get("nonce")
    if not isinstance(nonce, str) or not hmac.compare_digest(nonce, flow["nonce"]):
        raise OidcError("oidc_state_mismatch", "the ID token was not issued for this sign-in")
    return id_token, flow["next"]


def _sealed(settings: Settings, flow: dict[str, Any]) -> str:
    body = base64.urlsafe_b64encode(json.dumps(flow, separators=(",", ":")).encode()).decode()
    mac = hmac.new(signing_key(settings), b"oidc-flow\0" + body.encode(), hashlib.sha256)
    return f"{body}.{mac.hexdigest()}"


def _opened(settings: Settings, cookie: str | None) -> dict[str, Any]:
    body, _, mac = (cookie or "").rpartition(".")
    expected = hmac.new(signing_key(settings), b"oidc-flow\0" + body.encode(), hashlib.sha256)
    if not body or not hmac.compare_digest(expected.hexdigest(), mac):
        raise OidcError("oidc_state_mismatch", "the sign-in was not started in this browser")
    flow = json.loads(base64.urlsafe_b64decode(body))
    if flow.get("exp", 0) < time.time():
        raise OidcError("oidc_state_mismatch", "the sign-in took too long: start again")
    return flow
