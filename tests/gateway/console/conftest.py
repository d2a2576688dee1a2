"""A signed-in console: the real app in-process, the session cookie set by the real form."""

from __future__ import annotations

import re

import pytest

CSRF = re.compile(r'name="csrf" value="([0-9a-f]{64})"')


@pytest.fixture
def sign_in(client, token):
    """sign_in(sub, *roles) -> the client, signed in through POST /console/login."""

    def go(sub: str, *roles: str, tenant: str = "default", ttl: int = 3600):
        bearer = token(sub, *roles, tenant=tenant, ttl=ttl)["Authorization"].removeprefix("Bearer ")
        client.cookies.clear()
        response = client.post("/console/login", data={"token": bearer}, follow_redirects=False)
        assert response.status_code == 303, response.text
        return client

    return go


def csrf_of(page_html: str) -> str:
    match = CSRF.search(page_html)
    assert match, "no CSRF field on the page"
    return match.group(1)


@pytest.fixture(scope="module")
def browser():
    """One headless Chromium per module of journeys (each opens its own contexts). Not per
    session: while Playwright's sync API runs, the worker's thread counts as inside a
    running event loop, and the modules that call asyncio.run would fail after it."""
    from playwright.sync_api import sync_playwright

    from tests.gateway.console.browsing import CHROMIUM

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox"]
        )
        yield chromium
        chromium.close()
