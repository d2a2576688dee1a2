"""The policy pages: rules filtered, added and removed through forms (each change a new
version with its reason), refusals beside the field they name, versions and their diff, and
"what if" naming the rule that decided. The same checks as the policy API refuse the rest."""

from __future__ import annotations

import html
import re

from tests.gateway.console.conftest import csrf_of

GRANT = {
    "ptype": "p",
    "sub": "user:frank",
    "tenant": "default",
    "obj": "model:*",
    "act": "list",
    "eft": "allow",
    "reason": "frank reviews the registry",
}
LINE = "p,user:frank,default,model:*,list,allow"
ASK = {"sub": "user:frank", "tenant": "default", "obj": "model:*", "act": "list", "roles": ""}


def _error(page: str, field: str) -> str:
    match = re.search(rf'id="f-{field}-error" class="error">([^<]*)<', page)
    assert match, f"no error beside {field}"
    return html.unescape(match.group(1))


def test_only_admins_edit_and_others_are_told_why(sign_in):
    engineer = sign_in("bob", "ml-engineer")
    refused = engineer.get("/console/policies")
    assert refused.status_code == 403
    assert "Not allowed" in refused.text and "permission_denied" in refused.text
    assert "may not read policy" in refused.text  # the API's own reason, in words

    officer = sign_in("carol", "compliance-officer")  # reads and checks, never edits
    page = officer.get("/console/policies?tenant=*&sub=role:compliance-officer")
    assert page.status_code == 200 and "role:compliance-officer" in page.text
    assert "Add a rule" not in page.text and "Remove" not in page.text
    posted = officer.post("/console/policies/rules", data={"csrf": csrf_of(page.text), **GRANT})
    assert posted.status_code == 403 and "permission_denied" in posted.text


def test_admin_adds_a_grant_and_what_if_flips_then_removes_it(sign_in):
    admin = sign_in("ada", "admin")
    page = admin.get("/console/policies")
    assert page.status_code == 200 and "Add a rule" in page.text
    csrf = csrf_of(page.text)

    before = admin.post("/console/policies/what-if", data={"csrf": csrf, **ASK})
    assert before.status_code == 200
    assert 'data-decision="deny"' in before.text and "denied by default" in before.text

    added = admin.post("/console/policies/rules", data={"csrf": csrf, **GRANT})
    assert added.status_code == 200 and "Saved as policy version 2" in added.text
    assert LINE in added.text  # its row, with a remove button
    after = admin.post("/console/policies/what-if", data={"csrf": csrf, **ASK})
    assert 'data-decision="allow"' in after.text
    assert f"<code>{LINE}</code>" in after.text  # the rule that decided

    versions = admin.get("/console/policies/versions")
    assert "frank reviews the registry" in versions.text and "user:ada" in versions.text
    diff = admin.get("/console/policies/diff?from=1&to=2")
    assert diff.status_code == 200
    assert re.search(r'class="diff-added">.*?user:frank.*?model:\*', diff.text, re.S)
    backwards = admin.get("/console/policies/diff?from=2&to=1")
    assert 'class="diff-removed"' in backwards.text and "user:frank" in backwards.text
    missing = admin.get("/console/policies/diff?from=1&to=99")
    assert missing.status_code == 404 and "no policy version 99" in missing.text

    removal = {"csrf": csrf, "rule": LINE}
    unexplained = admin.post("/console/policies/rules/remove", data=removal)
    assert unexplained.status_code == 422 and 'class="error">give a reason' in unexplained.text
    removed = admin.post("/console/policies/rules/remove", data=removal | {"reason": "done"})
    assert "Saved as policy version 3" in removed.text and LINE not in removed.text
    again = admin.post("/console/policies/rules/remove", data=removal | {"reason": "twice"})
    assert again.status_code == 404 and "Not removed: no such rule" in again.text
    last = admin.post("/console/policies/what-if", data={"csrf": csrf, **ASK})
    assert 'data-decision="deny"' in last.text


def test_bad_input_comes_back_beside_its_field(sign_in):
    admin = sign_in("ada", "admin")
    csrf = csrf_of(admin.get("/console/policies").text)
    cases = [
        ({"act": "fly"}, "act", "unknown action"),  # the policy store's vocabulary
        ({"act": "train"}, "act", "not an action on model"),
        ({"sub": "frank"}, "sub", "user:<sub> or role:<name>"),
        ({"tenant": "other"}, "tenant", "must name your tenant"),
        ({"obj": "x" * 300}, "obj", "at most 256 characters"),  # the API's schema
        ({"reason": ""}, "reason", "give a reason"),
        ({"ptype": "g", "role": "admin"}, "role", "role must be role:<name>"),
    ]
    for change, field, words in cases:
        page = admin.post("/console/policies/rules", data={"csrf": csrf, **GRANT, **change})
        assert page.status_code == 422, (change, page.status_code)
        assert words in _error(page.text, field), change
        assert 'aria-invalid="true"' in page.text
    admin.post("/console/policies/rules", data={"csrf": csrf, **GRANT})
    twice = admin.post("/console/policies/rules", data={"csrf": csrf, **GRANT})
    assert twice.status_code == 409 and "rule already exists" in twice.text

    hostile = "<script>alert(1)</script>"
    filtered = admin.get("/console/policies", params={"sub": hostile})
    assert filtered.status_code == 422 and 'id="q-sub-error"' in filtered.text
    assert hostile not in filtered.text and "&lt;script&gt;" in filtered.text

    asked = admin.post("/console/policies/what-if", data={"csrf": csrf, **ASK, "act": "fly"})
    assert asked.status_code == 422 and "unknown action" in _error(asked.text, "act")
    other = admin.post("/console/policies/what-if", data={"csrf": csrf, **ASK, "tenant": "x"})
    assert other.status_code == 422 and "tenant must be" in _error(other.text, "tenant")
    unsent = admin.get("/console/policies/diff?from=1")
    assert unsent.status_code == 422 and "Refused" in unsent.text


def test_what_if_checks_a_purpose_against_the_data_source(sign_in, client, people):
    from tests.gateway.conftest import SOURCE

    source = client.post("/v1/data_sources", json=SOURCE, headers=people["dora"]).json()
    admin = sign_in("ada", "admin")
    csrf = csrf_of(admin.get("/console/policies/what-if").text)
    ask = {**ASK, "obj": f"ds:{source['id']}", "act": "train", "csrf": csrf}
    allowed = admin.post(
        "/console/policies/what-if", data={**ask, "purpose": SOURCE["allowed_purposes"][0]}
    )
    assert allowed.status_code == 200 and "allowed by the data source" in allowed.text
    other = admin.post("/console/policies/what-if", data={**ask, "purpose": "marketing"})
    assert "not among the data source&#39;s purposes" in other.text
    no_source = admin.post("/console/policies/what-if", data={**ASK, "csrf": csrf, "purpose": "x"})
    assert no_source.status_code == 422 and "give the object as ds:" in _error(
        no_source.text, "purpose"
    )
