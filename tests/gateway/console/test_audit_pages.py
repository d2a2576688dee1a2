"""The audit pages: filters with their errors beside the field, keyset paging, an event's
canonical JSON (the stored body's bytes), and the exports."""

from __future__ import annotations

import csv
import html
import io
import json
import re

from sqlalchemy import create_engine, text

from gateway.console.exports import csv_lines


def _seed(client, people, count: int) -> None:
    for _ in range(count):  # each read of the trail is itself an audit event
        assert client.get("/v1/audit/events?limit=1", headers=people["carol"]).status_code == 200


def test_a_bad_filter_is_shown_beside_its_field(sign_in):
    client = sign_in("carol", "compliance-officer")
    page = client.get("/console/audit", params={"since": "last tuesday", "actor": "a\x01b"})
    assert page.status_code == 422
    assert 'id="f-since-error"' in page.text and 'id="f-actor-error"' in page.text


def test_pages_follow_the_sequence_number(sign_in, people):
    client = sign_in("carol", "compliance-officer")
    _seed(client, people, 60)
    first = client.get("/console/audit")
    next_link = re.search(r'href="(/console/audit\?after=\d+)" rel="next"', first.text)
    assert next_link, "no next page"
    second = client.get(next_link.group(1).replace("&amp;", "&"))
    seqs = [int(s) for s in re.findall(r'href="/console/audit/events/(\d+)"', second.text)]
    assert seqs and min(seqs) == int(next_link.group(1).rsplit("=", 1)[1]) + 1


def test_an_event_page_shows_the_stored_canonical_bytes(sign_in, people, gateway_settings):
    client = sign_in("carol", "compliance-officer")
    _seed(client, people, 1)
    seq = client.get("/v1/audit/events", headers=people["carol"]).json()["data"][0]["seq"]
    engine = create_engine(gateway_settings.database_url)
    with engine.connect() as connection:
        body = connection.execute(
            text("SELECT body FROM audit_events WHERE seq = :seq"), {"seq": seq}
        ).scalar_one()
    engine.dispose()
    page = client.get(f"/console/audit/events/{seq}")
    assert page.status_code == 200
    shown = re.search(r'<pre class="json">(.*?)</pre>', page.text, re.S).group(1)
    assert html.unescape(shown).encode() == bytes(body)


def test_exports_stream_jsonl_and_csv_of_the_filtered_range(sign_in, people):
    client = sign_in("carol", "compliance-officer")
    _seed(client, people, 3)
    jsonl = client.get("/console/audit/export.jsonl", params={"action": "audit.read"})
    assert jsonl.status_code == 200 and "attachment" in jsonl.headers["content-disposition"]
    events = [json.loads(line) for line in jsonl.text.splitlines() if line]
    assert len(events) >= 3 and {e["action"] for e in events} == {"audit.read"}
    as_csv = client.get("/console/audit/export.csv", params={"action": "audit.read"})
    rows = list(csv.DictReader(io.StringIO(as_csv.text)))
    assert [int(r["seq"]) for r in rows][: len(events)] == [e["seq"] for e in events]
    assert client.get("/console/audit/export.csv", params={"since": "x"}).status_code == 400


def test_csv_cells_that_a_spreadsheet_would_run_are_quoted():
    line = json.dumps({"seq": 1, "actor": '=HYPERLINK("x")', "details": {"a": 1}}).encode()
    rows = list(
        csv.reader(io.StringIO(b"".join(csv_lines([line[:10], line[10:] + b"\n"])).decode()))
    )
    assert rows[1][2] == '\'=HYPERLINK("x")' and rows[1][8] == '{"a":1}'


def test_engineers_cannot_export_or_verify(sign_in):
    client = sign_in("bob", "ml-engineer")
    for path in ("/console/audit/export.jsonl", "/console/audit/verify"):
        page = client.get(path)
        assert page.status_code == 403 and "permission_denied" in page.text
