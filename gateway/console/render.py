"""Pages from Jinja2 templates, autoescaped: every value a page shows is text, never markup."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader

from gateway.authz import allows
from gateway.console.session import CSRF_FIELD, csrf_token, session_token_of
from gateway.security import Principal
from gateway.state import GatewayState

TEMPLATES = Path(__file__).parent / "templates"

environment = Environment(
    loader=FileSystemLoader(TEMPLATES),
    autoescape=True,  # every template, whatever its name
    trim_blocks=True,
    lstrip_blocks=True,
)
environment.tests["page"] = lambda href: links_to_page(href)

# (label, path, object, action): a section shows in the menu when its page would allow.
NAV = (
    ("Home", "/console", None, None),
    ("Audit", "/console/audit", "audit", "read"),
    ("Models", "/console/models", "model:*", "list"),
    ("Data sources", "/console/data-sources", "ds:*", "list"),
    ("Erasure", "/console/erasure", "erasure:*", "list"),
    ("Policies", "/console/policies", "policy", "read"),
    ("Jobs", "/console/jobs", "job:*", "list"),
)


# The console's page paths (filled by gateway.console.app): a link is drawn only to a page
# that exists.
PAGES: set[str] = set()


def nav_for(state: GatewayState, principal: Principal) -> list[tuple[str, str]]:
    return [
        (label, path)
        for label, path, obj, act in NAV
        if path in PAGES and (obj is None or allows(state.policy, principal, obj, act))
    ]


def links_to_page(href: str) -> bool:
    return href.split("?", 1)[0] in PAGES or any(
        href.startswith(page.split("{", 1)[0]) for page in PAGES if "{" in page
    )


def render(
    request: Request,
    template: str,
    *,
    state: GatewayState,
    principal: Principal | None,
    status_code: int = 200,
    **context: Any,
) -> HTMLResponse:
    token = session_token_of(request)
    page = environment.get_template(template).render(
        request_path=request.url.path,
        principal=principal,
        nav=nav_for(state, principal) if principal else [],
        csrf_field=CSRF_FIELD,
        csrf=csrf_token(state.settings, token) if token and principal else "",
        **context,
    )
    return HTMLResponse(page, status_code=status_code)
