"""Journey 2 in a real Chromium against a real uvicorn on SQLite: the admin adds a grant in
the page, and "what if" flips from deny to allow naming the new rule. Hostile values typed
into a rule value and a reason come back as text: no dialog, no script, no CSP report."""

from __future__ import annotations

import pytest

from tests.gateway.console.browsing import HOSTILE, Watched, needs_chromium, sign_in

pytestmark = needs_chromium

LINE = "p,user:frank,default,model:*,list,allow"


@pytest.fixture
def backend(request):  # one backend is enough for what a browser sees
    return "sqlite"


def _what_if(watched: Watched) -> str:
    page = watched.page
    for field, value in (("sub", "user:frank"), ("obj", "model:*"), ("act", "list")):
        page.fill(f"#f-{field}", value)
    page.click("main button:has-text('Check')")
    page.wait_for_load_state("networkidle")
    return page.inner_text(".what-if")


def _add(watched: Watched, **values: str) -> None:
    for field, value in values.items():
        watched.page.fill(f"#f-{field}", value)
    watched.page.click("main button:has-text('Add the rule')")
    watched.page.wait_for_load_state("networkidle")


def test_admin_grants_and_what_if_flips_naming_the_rule(
    browser, live_server, gateway_settings, people
):
    base_url = live_server(gateway_settings)
    admin = Watched(browser.new_context(), base_url)
    bearer = people["ada"]["Authorization"].removeprefix("Bearer ")
    sign_in(admin, bearer, then="/console/policies/what-if")
    page = admin.page
    assert "DENY" in _what_if(admin).upper()
    assert "denied by default" in page.inner_text(".decided-by")

    admin.open("/console/policies")
    _add(admin, sub=HOSTILE[0], obj=HOSTILE[1], act="list", reason="x")  # refused, as text
    assert page.input_value("#f-sub") == HOSTILE[0]
    assert "may only contain" in page.inner_text("#f-sub-error")
    admin.check_accessibility("/console/policies (form with errors)")
    _add(admin, sub="user:frank", obj="model:*", act="list", reason=" ".join(HOSTILE))
    assert "Saved as policy version 2" in page.inner_text("main")
    assert "user:frank\tdefault\tmodel:*\tlist\tallow" in page.inner_text("table.rules")
    admin.check_accessibility("/console/policies")
    admin.screenshot("policies")

    admin.open("/console/policies/what-if")
    outcome = _what_if(admin)
    assert "ALLOW" in outcome.upper() and LINE in page.inner_text(".decided-by")
    admin.check_accessibility("/console/policies/what-if (allow)")
    admin.screenshot("policy-what-if")

    admin.open("/console/policies/versions")
    assert " ".join(HOSTILE) in page.inner_text("td.reason >> nth=0")
    page.click("main button:has-text('Show the difference')")
    page.wait_for_load_state("networkidle")
    assert "/console/policies/diff?" in page.url and {"from=1", "to=2"} <= set(
        page.url.split("?")[1].split("&")
    )
    assert "user:frank" in page.inner_text("tr.diff-added")
    admin.check_accessibility("/console/policies/diff")
    admin.screenshot("policy-diff")
    assert admin.problems == []
