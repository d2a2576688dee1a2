"""The console's datasheet view of conflicting and structured answers (issue 17): line
numbers and the schema, every value escaped."""

from __future__ import annotations

import json

from tests.gateway.conftest import chat_line, jsonl, upload

TAG = "<b>x</b>"


def test_conflicts_and_the_schema_are_shown_escaped(client, people, approved_source, sign_in):
    source = approved_source(min_examples=2, max_conflict_rate=0.5)
    lines = [
        chat_line(
            f"Classify ticket {i}: the parcel {i} is late", json.dumps({"severity": s, TAG: 1})
        )
        for i, s in enumerate(["high", "low"] * 6 + ["hgih"])
    ]
    lines += [chat_line("Which depot?", a) for a in ["North", "North", "South"]]
    file_id = upload(client, people["dora"], data_source=source["id"], content=jsonl(*lines))
    assert file_id.status_code == 200, file_id.text
    html = sign_in("carol", "compliance-officer").get(f"/console/files/{file_id.json()['id']}").text
    assert TAG not in html and "&lt;b&gt;x&lt;/b&gt;" in html  # a key is shown, escaped
    assert '<td class="line-numbers">14, 15, 16</td>' in html  # the conflict group
    assert '<td class="line-numbers">16</td>' in html  # its suspect line
    assert "hgih: like high?" in html
    assert '<tr class="gate-passed"><td>conflicts</td>' in html
