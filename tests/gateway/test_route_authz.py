"""Invariant 1, deny by default: every route but the operational ones declares its
(object, action) through `Authorize`, and refuses callers without a grant."""

from __future__ import annotations

import re

import pytest
from fastapi.routing import APIRoute, iter_route_contexts

from gateway.config import Settings
from gateway.deps import Authorize, AuthorizeUpload
from gateway.health import UNAUTHENTICATED_PATHS
from gateway.main import create_app


def _authorize_dependencies(dependant) -> list[Authorize]:
    found = [dependant.call] if isinstance(dependant.call, Authorize) else []
    for sub in dependant.dependencies:
        found.extend(_authorize_dependencies(sub))
    return found


def _routes():
    """Every API route the app serves, with routers' includes flattened (the console's
    pages have their own test: tests/gateway/console/test_console_authz.py)."""
    app = create_app(Settings(env="dev"))
    return [r for r in iter_route_contexts(app.routes) if not r.path.startswith("/console")]


def _governed_routes():
    return [r for r in _routes() if r.path not in UNAUTHENTICATED_PATHS]


def _minimal_body(route) -> dict:
    """An upload decides on its form fields, so it is asked with them (and a file)."""
    [check] = _authorize_dependencies(route.dependant)
    if not isinstance(check, AuthorizeUpload):
        return {}
    fields = {name: "fine-tune" if name == "purpose" else "1" for name in check.fields}
    return {"data": fields, "files": {"file": ("a.jsonl", b"{}\n")}}


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "1", path)


class TestEveryRouteIsAuthorized:
    def test_only_operational_routes_are_exempt(self):
        exempt = {r.path for r in _routes()} & UNAUTHENTICATED_PATHS
        assert exempt <= {
            "/healthz",
            "/readyz",
            "/metrics",
            "/docs",
            "/openapi.json",
            "/docs/oauth2-redirect",
            "/redoc",
        }

    @pytest.mark.parametrize("route", _governed_routes(), ids=lambda r: f"{r.methods} {r.path}")
    def test_route_declares_exactly_one_authorization(self, route):
        assert isinstance(route.original_route, APIRoute), f"{route.path} is not an APIRoute"
        checks = _authorize_dependencies(route.dependant)
        assert len(checks) == 1, f"{route.path} declares {checks or 'no'} authorization"

    def test_every_governed_route_refuses_without_token_and_without_grant(self, client, token):
        nobody = token("nobody")  # a valid token with no role and no grant
        for route in _governed_routes():
            for method in sorted(route.methods - {"HEAD"}):
                path = _concrete(route.path)
                anonymous = client.request(method, path)
                assert anonymous.status_code == 401, (method, path, anonymous.text)
                assert anonymous.headers["www-authenticate"].startswith("Bearer")
                refused = client.request(method, path, headers=nobody, **_minimal_body(route))
                assert refused.status_code == 403, (method, path, refused.text)
                assert refused.json()["error"]["code"] == "permission_denied"
