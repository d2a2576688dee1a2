"""Deny by default, in the console too: every page declares one check (the API's own
`Authorize` decision, or a signed-in person for the home and sign-out), and refuses a
signed-out visitor and a person without a grant."""

from __future__ import annotations

import re

import pytest
from fastapi.routing import APIRoute, iter_route_contexts

from gateway.config import Settings
from gateway.console.deps import ConsoleAuthorize, SignedIn
from gateway.main import create_app
from tests.gateway.console.conftest import csrf_of

# Sign-in itself (the token form, and OIDC out and back), and the vendored static files,
# are all a signed-out visitor may reach.
OPEN = {"/console/login", "/console/login/oidc", "/console/oidc/callback", "/console/static"}


def _checks(dependant) -> list:
    found = [dependant.call] if isinstance(dependant.call, ConsoleAuthorize | SignedIn) else []
    for sub in dependant.dependencies:
        found.extend(_checks(sub))
    return found


def _console_routes():
    app = create_app(Settings(env="dev"))
    routes = [r for r in iter_route_contexts(app.routes) if r.path.startswith("/console")]
    return [r for r in routes if r.path not in OPEN]


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "1", path)


def test_there_are_console_pages():
    assert len(_console_routes()) >= 3


@pytest.mark.parametrize("route", _console_routes(), ids=lambda r: f"{r.methods} {r.path}")
def test_page_declares_exactly_one_check(route):
    assert isinstance(route.original_route, APIRoute), route.path
    checks = _checks(route.dependant)
    assert len(checks) == 1, f"{route.path} declares {checks or 'no'} check"


def test_every_page_refuses_signed_out_and_ungranted_visitors(client, sign_in):
    routes = _console_routes()
    for route in routes:
        for method in sorted(route.methods - {"HEAD"}):
            response = client.request(method, _concrete(route.path), follow_redirects=False)
            assert response.status_code in (303, 403), (method, route.path, response.status_code)
            if response.status_code == 303:
                assert response.headers["location"].startswith("/console/login?next=")
    sign_in("nobody")  # a valid session with no role and no grant
    form = {"csrf": csrf_of(client.get("/console").text)}  # so the policy is what refuses
    for route in routes:
        [check] = _checks(route.dependant)
        if not isinstance(check, ConsoleAuthorize):
            continue
        for method in sorted(route.methods - {"HEAD"}):
            data = form if method == "POST" else None
            response = client.request(
                method, _concrete(route.path), data=data, follow_redirects=False
            )
            assert response.status_code == 403, (method, route.path, response.text[:300])
            assert "permission_denied" in response.text
