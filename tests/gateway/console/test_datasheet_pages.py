"""A file version's datasheet in the console: facts, PII by type with line numbers (never the
value), duplicates, overlap and gates; refused to a person who may not read the source."""

from __future__ import annotations

import re

from tests.gateway.conftest import chat_line, good_file, jsonl, upload

EMAIL = "Jane.Roe@Example.org"


def _with_pii() -> bytes:
    return jsonl(
        chat_line("hi", "all good here, thanks for asking"),
        chat_line(f"please write to {EMAIL}", "done, I have noted that address"),
        chat_line("hi", "all good here, thanks for asking"),
    )


def test_the_datasheet_shows_pii_by_line_and_the_gates(client, people, approved_source, sign_in):
    source = approved_source(pii_action="block", min_examples=2)
    refused = upload(client, people["dora"], data_source=source["id"], content=_with_pii())
    assert refused.json()["status"] == "error"
    clean = upload(client, people["dora"], data_source=source["id"], content=good_file(3)).json()
    file_id = refused.json()["id"]

    carol = sign_in("carol", "compliance-officer")
    page = carol.get(f"/console/files/{file_id}")
    assert page.status_code == 200, page.text
    html = page.text
    assert EMAIL not in html and EMAIL.lower() not in html.lower()
    [pii_row] = re.findall(r"<tr><td>email</td>.*?</tr>", html)
    assert '<td class="line-numbers">2</td>' in pii_row
    assert "Exact</dt><dd>1</dd>" in html  # line 3 repeats line 1
    gates = re.findall(r'<tr class="gate-\w+"><td>(\w+)</td><td>(\w+)</td>', html)
    assert gates == [
        ("upload", "failed"),
        ("file", "failed"),  # not processed: nothing is trained on it
        ("file", "passed"),  # uploaded for fine-tune
        ("data_source_approved", "passed"),
        ("min_examples", "passed"),
    ]
    assert "file_not_usable" in html
    assert f'href="/console/data-sources/{source["id"]}"' in html

    good = carol.get(f"/console/files/{clean['id']}").text
    assert "gate-failed" not in good
    assert "tokens" in good.lower() and "3 examples" in good
    listing = carol.get(f"/console/files?data_source={source['id']}", headers={"HX-Request": "1"})
    assert listing.status_code == 200 and "<html" not in listing.text
    assert f'href="/console/files/{file_id}"' in listing.text
    source_page = carol.get(f"/console/data-sources/{source['id']}").text
    assert f'hx-get="/console/files?data_source={source["id"]}"' in source_page


def test_a_person_who_may_not_read_the_source_is_refused(client, people, approved_source, sign_in):
    source = approved_source()
    file_id = upload(client, people["dora"], data_source=source["id"], content=good_file()).json()[
        "id"
    ]
    engineer = sign_in("bob", "ml-engineer")  # lists sources, reads none without a grant
    refused = engineer.get(f"/console/files/{file_id}")
    assert refused.status_code == 403
    assert "Not allowed" in refused.text and "permission_denied" in refused.text
    missing = sign_in("carol", "compliance-officer").get("/console/files/file-nope")
    assert missing.status_code == 404 and "file_not_found" in missing.text
