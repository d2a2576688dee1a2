"""What every browser journey shares: Chromium (Playwright driving Debian's /usr/bin/chromium,
headless), a page whose dialogs, script errors and CSP reports are collected, axe-core, and
screenshots in var/test-artifacts/console/ (docs/console/ keeps the README's copies)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
AXE = Path(__file__).parent / "vendor" / "axe.min.js"
ARTIFACTS = Path(__file__).parents[3] / "var" / "test-artifacts" / "console"
HOSTILE = [
    "<script>alert(1)</script>",
    '"><img src=x onerror=alert(1)>',
    "javascript:alert(1)",
]

needs_chromium = pytest.mark.skipif(
    shutil.which(CHROMIUM) is None, reason="needs Debian's chromium (.ci/run installs it)"
)


class Watched:
    """A page whose dialogs, page errors and CSP reports are collected, never ignored."""

    def __init__(self, context, base_url: str) -> None:
        self.base_url = base_url
        self.page = context.new_page()
        self.problems: list[str] = []
        self.page.on(
            "dialog", lambda d: (self.problems.append(f"dialog: {d.message}"), d.dismiss())
        )
        self.page.on("pageerror", lambda e: self.problems.append(f"script error: {e}"))
        self.page.on("console", self._console)
        self.page.on("response", self._response)

    def _console(self, message) -> None:
        # A page answered 4xx on purpose (a refusal, a form with errors) is logged by the
        # browser as a failed load; those statuses are asserted by the test itself, and a
        # failed script, style or image is caught by _response.
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            self.problems.append(f"console error: {message.text}")

    def _response(self, response) -> None:
        if response.status >= 400 and response.request.resource_type != "document":
            self.problems.append(f"{response.status} for {response.url}")

    def open(self, path: str) -> None:
        self.page.goto(self.base_url + path)
        self.page.wait_for_load_state("networkidle")
        self.check_accessibility(path)

    def check_accessibility(self, path: str) -> None:
        # Evaluated over CDP, which the page's CSP does not govern (a script tag would be
        # refused, as it should be).
        self.page.evaluate(AXE.read_text() + "\n;undefined")
        result = self.page.evaluate(
            "async () => (await axe.run(document, {resultTypes: ['violations']})).violations"
            ".filter(v => ['serious', 'critical'].includes(v.impact))"
            ".map(v => v.id + ': ' + v.nodes.map(n => n.target.join(' ')).join(', '))"
        )
        assert result == [], f"{path}: {result}"

    def screenshot(self, name: str) -> None:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        # caret="initial": Playwright's caret hiding leaves style="" on inputs, which a later
        # htmx swap would copy into the page and the CSP would (rightly) refuse.
        self.page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True, caret="initial")


def sign_in(watched: Watched, bearer: str, *, then: str = "/console") -> None:
    watched.page.goto(f"{watched.base_url}/console/login?next={then}")
    watched.page.fill("#token", bearer)
    watched.page.click("button[type=submit]")
    watched.page.wait_for_load_state("networkidle")


def post_from_page(watched: Watched, action: str) -> None:
    """Submit a form the page does not offer (its CSRF token included), as a person could."""
    watched.page.evaluate(
        """action => {
            const form = document.createElement('form');
            form.method = 'post';
            form.action = action;
            const csrf = document.createElement('input');
            csrf.type = 'hidden'; csrf.name = 'csrf';
            csrf.value = document.querySelector('input[name=csrf]').value;
            form.appendChild(csrf);
            document.body.appendChild(form);
            form.submit();
        }""",
        action,
    )
    watched.page.wait_for_load_state("networkidle")
