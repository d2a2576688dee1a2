"""Sign-in, the session cookie, CSRF, sign-out, expiry and the headers every page carries."""

from __future__ import annotations

import time

import jwt
import pytest

from gateway.console.session import COOKIE, safe_next
from tests.gateway.console.conftest import csrf_of


def _expired_token(settings) -> str:
    """A token signed as the gateway signs them, whose exp passed beyond the clock leeway."""
    now = int(time.time())
    claims = {
        "sub": "carol",
        "tenant": "default",
        "roles": ["compliance-officer"],
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "iat": now - 3600,
        "exp": now - 120,
    }
    return jwt.encode(claims, settings.effective_jwt_secret, algorithm="HS256")


def _bearer(token, *args, **kwargs) -> str:
    return token(*args, **kwargs)["Authorization"].removeprefix("Bearer ")


class TestSignIn:
    def test_cookie_is_http_only_strict_and_expires_with_the_token(self, client, token):
        response = client.post(
            "/console/login",
            data={"token": _bearer(token, "carol", "compliance-officer", ttl=600)},
            follow_redirects=False,
        )
        assert response.status_code == 303 and response.headers["location"] == "/console"
        cookie = response.headers["set-cookie"]
        assert cookie.startswith(f"{COOKIE}=")
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/console" in cookie
        assert "expires=" in cookie.lower()
        assert "Secure" not in cookie  # dev runs on plain http; see the prod test below

    def test_outside_dev_the_cookie_is_secure(self):
        from gateway.config import Settings
        from gateway.console.session import cookie_options

        settings = Settings.model_construct(env="prod")
        assert cookie_options(settings, expires=None)["secure"] is True

    def test_a_refused_token_shows_the_reason_beside_the_field(self, client):
        response = client.post("/console/login", data={"token": "not-a-jwt"})
        assert response.status_code == 422
        assert 'id="token-error"' in response.text and "refused" in response.text
        assert COOKIE not in response.headers.get("set-cookie", "")

    def test_an_empty_form_is_refused_beside_the_field(self, client):
        response = client.post("/console/login", data={})
        assert response.status_code == 422 and 'id="token-error"' in response.text

    def test_next_only_leads_inside_the_console(self):
        assert safe_next("/console/audit?actor=x") == "/console/audit?actor=x"
        for bad in ("https://evil.example/", "//evil.example/console", "/v1/files", "javascript:x"):
            assert safe_next(bad) == "/console"

    def test_an_expired_session_signs_in_again_and_returns_to_the_page(
        self, client, token, gateway_settings
    ):
        client.cookies.set(COOKIE, _expired_token(gateway_settings))
        response = client.get("/console/audit?actor=x", follow_redirects=False)
        assert response.status_code == 303
        target = response.headers["location"]
        assert target.startswith("/console/login?next=%2Fconsole%2Faudit%3Factor%3Dx")
        assert "expired=1" in target
        page = client.get(target)
        assert "session has expired" in page.text
        fresh = _bearer(token, "carol", "compliance-officer")
        back = client.post(
            "/console/login",
            data={"token": fresh, "next": "/console/audit?actor=x"},
            follow_redirects=False,
        )
        assert back.headers["location"] == "/console/audit?actor=x"


class TestCsrfAndSignOut:
    def test_sign_out_needs_the_session_csrf_token(self, sign_in):
        client = sign_in("carol", "compliance-officer")
        refused = client.post("/console/logout", data={"csrf": "0" * 64})
        assert refused.status_code == 403 and "csrf_token_invalid" in refused.text
        assert client.get("/console", follow_redirects=False).status_code == 200

    def test_sign_out_ends_the_session(self, sign_in):
        client = sign_in("carol", "compliance-officer")
        csrf = csrf_of(client.get("/console").text)
        response = client.post("/console/logout", data={"csrf": csrf}, follow_redirects=False)
        assert response.status_code == 303 and response.headers["location"] == "/console/login"
        assert (
            "Max-Age=0" in response.headers["set-cookie"]
            or "expires=" in response.headers["set-cookie"]
        )
        client.cookies.clear()  # what the browser does with the expired cookie
        assert client.get("/console", follow_redirects=False).status_code == 303

    def test_a_csrf_token_is_bound_to_its_session(self, sign_in):
        client = sign_in("carol", "compliance-officer")
        old = csrf_of(client.get("/console").text)
        sign_in("dave", "compliance-officer")
        assert client.post("/console/logout", data={"csrf": old}).status_code == 403


@pytest.mark.parametrize(
    "path", ["/console/login", "/console", "/console/audit", "/console/nowhere"]
)
def test_every_page_carries_the_security_headers(sign_in, path):
    client = sign_in("carol", "compliance-officer")
    response = client.get(path)
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert "frame-ancestors 'none'" in csp
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["referrer-policy"] == "same-origin"
    assert response.headers["cache-control"] == "no-store"
    assert "<script>" not in response.text  # no inline script on any page


def test_api_errors_stay_json_and_console_errors_are_pages(sign_in):
    client = sign_in("carol", "compliance-officer")
    assert client.get("/v1/nowhere").headers["content-type"].startswith("application/json")
    page = client.get("/console/nowhere")
    assert page.status_code == 404 and page.headers["content-type"].startswith("text/html")
