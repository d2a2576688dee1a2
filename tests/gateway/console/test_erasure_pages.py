"""Erasure requests in the console: file one (errors beside the fields, 422), follow its
search (a partial htmx polls while it is open), decide it; refusals shown readably."""

from __future__ import annotations

import re

import pytest

from tests.gateway.conftest import chat_line, good_file, jsonl, upload
from tests.gateway.console.conftest import csrf_of

EMAIL = "Jane.Roe@Example.org"


@pytest.fixture
def mention(client, people, approved_source):
    source = approved_source(pii_action="allow")
    content = jsonl(
        chat_line("hello there", "hi, how can I help you today?"),
        chat_line(f"my address is {EMAIL}", "thanks, noted for the ticket"),
    )
    upload(client, people["dora"], data_source=source["id"], content=good_file())
    return upload(client, people["dora"], data_source=source["id"], content=content).json()


def test_file_follow_and_decide_an_erasure_request(sign_in, mention):
    carol = sign_in("carol", "compliance-officer")
    form = carol.get("/console/erasure/new")
    assert form.status_code == 200
    csrf = csrf_of(form.text)
    bad = carol.post("/console/erasure", data={"csrf": csrf, "subject": "  ", "reference": "a b"})
    assert bad.status_code == 422
    assert 'id="f-subject-error"' in bad.text and 'id="f-reference-error"' in bad.text
    filed = carol.post(
        "/console/erasure",
        data={"csrf": csrf, "subject": EMAIL, "reference": "CASE-7"},
        follow_redirects=False,
    )
    assert filed.status_code == 303, filed.text
    path = filed.headers["location"]
    request_id = path.rsplit("/", 1)[1]

    page = carol.get(path).text
    assert EMAIL not in page  # only its salted hash is kept
    assert "<dd data-scanned>2</dd>" in page and "<dd data-matching>1</dd>" in page
    assert f'hx-get="/console/erasure/{request_id}/progress" hx-trigger="every 2s"' in page
    assert f'href="/console/files/{mention["id"]}"' in page
    partial = carol.get(f"{path}/progress")
    assert partial.status_code == 200 and "<html" not in partial.text
    assert "CASE-7" in carol.get("/console/erasure?status=open").text

    accept = {"csrf": csrf, "decision": "accept", "reason": ""}
    missing_reason = carol.post(f"{path}/decide", data=accept)
    assert missing_reason.status_code == 422
    assert "a reason is required" in missing_reason.text
    assert 'id="f-reason-error"' in missing_reason.text
    nonsense = carol.post(f"{path}/decide", data={"csrf": csrf, "decision": "shrug"})
    assert nonsense.status_code == 422 and 'id="f-decision-error"' in nonsense.text
    decided = carol.post(f"{path}/decide", data=accept | {"reason": "legal hold applies"})
    assert decided.status_code == 200, decided.text  # back on the request's page
    assert "status-decided" in decided.text and "legal hold applies" in decided.text
    assert "hx-trigger" not in decided.text  # finished: no more polling
    again = carol.post(f"{path}/decide", data=accept | {"reason": "legal hold applies"})
    assert again.status_code == 409
    assert "already decided" in again.text and "already_decided" in again.text
    assert re.search(r"<td>accept by carol</td>", carol.get("/console/erasure").text)


def test_a_person_without_the_role_is_refused_readably(client, people, sign_in, mention):
    filed = client.post("/v1/erasure_requests", json={"subject": EMAIL}, headers=people["carol"])
    request_id = filed.json()["id"]
    dora = sign_in("dora", "data-owner")
    csrf = csrf_of(dora.get("/console").text)
    refused = dora.post(
        f"/console/erasure/{request_id}/decide",
        data={"csrf": csrf, "decision": "delete_data"},
    )
    assert refused.status_code == 403
    assert "Not allowed" in refused.text and "permission_denied" in refused.text
    assert dora.get("/console/erasure").status_code == 403
    assert "Erasure" not in re.search(r"<nav.*?</nav>", dora.get("/console").text, re.S).group(0)
    officer = sign_in("carol", "compliance-officer")
    missing = officer.get("/console/erasure/er-0000000000000000")
    assert missing.status_code == 404 and "erasure_request_not_found" in missing.text
