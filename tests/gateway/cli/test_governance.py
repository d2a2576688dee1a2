"""Data owners' and compliance officers' commands against a real gateway: data sources,
file uploads with their datasheets (progress through a real process), erasure requests,
and the audit trail searched, exported, verified on the gateway and checked offline."""

from __future__ import annotations

import json

import pytest

from gateway.client import Client
from tests.gateway.cli.cli_support import Cli, cast, cli_settings, config_dir, serving
from tests.gateway.conftest import chat_line, good_file, jsonl

__all__ = ["config_dir"]


@pytest.fixture(scope="module")
def cli(databases, tmp_path_factory, config_dir):
    # Erasure searches run in the background here, so `erasure request` follows one.
    settings = cli_settings(
        databases,
        tmp_path_factory,
        erasure_inline_search_bytes=0,
        erasure_search_poll_seconds=0.1,
    )
    with serving(settings) as url:
        tool = Cli(url, settings, config_dir)
        cast(tool)
        yield tool
    tool.assert_no_token_shown()


def _propose(cli: Cli, name: str) -> dict:
    result = cli(
        "--json",
        "data-sources",
        "propose",
        "--name",
        name,
        "--classification",
        "internal",
        "--purpose",
        "support-assistant",
        "--owner",
        "dora",
        "--retention-days",
        "365",
        "--min-examples",
        "2",
        "--personal-data",
        "--legal-basis",
        "contract",
        as_="dora",
    )
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def source(cli) -> dict:
    proposed = _propose(cli, "support chats")
    approved = cli("--json", "data-sources", "approve", proposed["id"], as_="carol")
    assert approved.exit_code == 0, approved.stderr
    return json.loads(approved.stdout)


@pytest.fixture(scope="module")
def uploaded(cli, source, tmp_path_factory) -> dict:
    path = tmp_path_factory.mktemp("upload") / "train.jsonl"
    path.write_bytes(good_file(20))
    result = cli.run("files", "upload", str(path), "--data-source", source["id"], as_="dora")
    assert result.exit_code == 0, result.stderr
    listed = json.loads(cli("--json", "files", "list", as_="dora").stdout)["data"]
    return {
        "result": result,
        "file": next(f for f in listed if f["filename"] == "train.jsonl"),
        "path": path,
    }


class TestDataSources:
    def test_propose_approve_list_get_revoke(self, cli, source):
        assert source["status"] == "approved" and source["approved_by"] == "carol"
        assert source["id"] in cli("data-sources", "list", as_="dora").stdout
        assert "approved_by: carol" in cli("data-sources", "get", source["id"], as_="dora").stdout

        other = _propose(cli, "old chats")
        refused = cli("data-sources", "approve", other["id"], as_="dora")
        assert refused.exit_code == 1 and "permission_denied" in refused.stderr
        cli("data-sources", "approve", other["id"], as_="carol")
        revoked = cli(
            "--json", "data-sources", "revoke", other["id"], "--reason", "retired", as_="carol"
        )
        assert json.loads(revoked.stdout)["status"] == "revoked"


class TestFiles:
    def test_an_upload_shows_its_datasheet(self, uploaded):
        out = uploaded["result"].stdout
        assert "status: processed" in out and "examples: 20" in out and "tokens:" in out

    def test_a_refused_upload_shows_its_faults_by_line_and_pii_by_type(self, cli, source, tmp_path):
        path = tmp_path / "bad.jsonl"
        path.write_bytes(
            jsonl(
                chat_line("mail ann@example.com please", "done, it went out"),
                b"not json",
                {"messages": [{"role": "user", "content": "no answer here"}]},
            )
        )
        result = cli("files", "upload", str(path), "--data-source", source["id"], as_="dora")
        assert result.exit_code == 1
        assert "status: error" in result.stdout and "email" in result.stdout
        for line, code in ((1, "pii_found"), (2, "invalid_json"), (3, "no_assistant_turn")):
            assert any(f"│ {line} " in row and code in row for row in result.stdout.splitlines()), (
                result.stdout
            )
        as_json = json.loads(
            cli(
                "--json", "files", "upload", str(path), "--data-source", source["id"], as_="dora"
            ).stdout
        )
        assert as_json["status"] == "error" and as_json["report"]["faults"]["count"] == 3

    def test_get_and_content(self, cli, uploaded, tmp_path):
        file_id = uploaded["file"]["id"]
        got = json.loads(cli("--json", "files", "get", file_id, as_="dora").stdout)
        assert got["sha256"] == uploaded["file"]["sha256"]
        target = tmp_path / "copy.jsonl"
        assert cli("files", "content", file_id, "-o", str(target), as_="dora").exit_code == 0
        assert target.read_bytes() == uploaded["path"].read_bytes()

    def test_delete_removes_the_content_and_keeps_the_record(self, cli, source, tmp_path):
        path = tmp_path / "spare.jsonl"
        path.write_bytes(good_file(3))
        uploaded = json.loads(
            cli(
                "--json", "files", "upload", str(path), "--data-source", source["id"], as_="dora"
            ).stdout
        )
        deleted = cli("--json", "files", "delete", uploaded["id"], as_="dora")
        assert deleted.exit_code == 0, deleted.stderr
        assert json.loads(deleted.stdout) == {
            "id": uploaded["id"],
            "object": "file",
            "deleted": True,
        }
        gone = cli("files", "content", uploaded["id"], "-o", str(tmp_path / "x"), as_="dora")
        assert gone.exit_code == 1
        kept = json.loads(cli("--json", "files", "get", uploaded["id"], as_="dora").stdout)
        assert kept["sha256"] == uploaded["sha256"]


class TestErasure:
    def test_request_status_decide(self, cli, uploaded):
        asked = cli(
            "--json", "erasure", "request", "--reference", "T-1", as_="carol", input="order 7?\n"
        )
        assert asked.exit_code == 0, asked.stderr
        request = json.loads(asked.stdout)
        assert [f["file_id"] for f in request["findings"]["files"]] == [uploaded["file"]["id"]]
        assert request["status"] == "open" and request["search"]["status"] == "done"
        assert "order 7" not in asked.stdout  # only a salted hash of the subject is kept
        assert request["id"] in cli("erasure", "status", as_="carol").stdout
        shown = cli("erasure", "status", request["id"], as_="carol")
        assert uploaded["file"]["id"] in shown.stdout
        assert "files_total: 1" in shown.stdout
        decided = cli(
            "--json",
            "erasure",
            "decide",
            request["id"],
            "--decision",
            "accept",
            "--reason",
            "kept under contract",
            as_="carol",
        )
        assert json.loads(decided.stdout)["status"] == "decided"


class TestAudit:
    def test_search_filters_and_pages(self, cli, source):
        page = json.loads(
            cli("--json", "audit", "search", "--action", "data_source.approved", as_="carol").stdout
        )
        assert page["data"] and {e["action"] for e in page["data"]} == {"data_source.approved"}
        first = cli("audit", "search", "--limit", "2", as_="carol")
        assert "more: --after" in first.stderr
        every = cli("--json", "audit", "search", "--all", "--limit", "3", as_="carol")
        seqs = [json.loads(line)["seq"] for line in every.stdout.splitlines()]
        assert seqs == sorted(set(seqs)) and len(seqs) > 3
        assert cli("audit", "search", as_="bob").exit_code == 1  # engineers cannot read it

    def test_verify_on_the_gateway_with_progress(self, cli, source):
        result = cli.run("--json", "audit", "verify", as_="carol")
        assert result.exit_code == 0, result.stderr
        verified = json.loads(result.stdout)
        assert verified["ok"] and verified["first_bad_seq"] is None and verified["length"] > 0

    @pytest.fixture
    def export(self, cli, source, tmp_path):
        target = tmp_path / "trail.jsonl"
        result = cli.run("audit", "export", "-o", str(target), as_="carol")
        assert result.exit_code == 0, result.stderr
        assert [p.name for p in tmp_path.iterdir()] == ["trail.jsonl"]  # no partial file left
        with Client(cli.url, cli.tokens["carol"]) as carol:
            key = carol.get("/v1/audit/public-key")
        pem = tmp_path / "key.pem"
        pem.write_text(key["public_key_pem"])
        return target, pem

    def test_a_good_export_verifies_offline(self, cli, export):
        target, pem = export
        result = cli("audit", "verify-export", str(target), "--public-key", str(pem))
        assert result.exit_code == 0, result.stdout
        assert "included in the tree" in result.stdout

    def test_a_tampered_export_is_named_by_its_seq(self, cli, export):
        target, pem = export
        lines = target.read_bytes().splitlines(keepends=True)
        seq = json.loads(lines[3])["seq"]
        lines[3] = lines[3].replace(b'"actor":"', b'"actor":"x', 1)
        target.write_bytes(b"".join(lines))
        result = cli("--json", "audit", "verify-export", str(target), "--public-key", str(pem))
        assert result.exit_code == 1
        verdict = json.loads(result.stdout)
        assert verdict["code"] == "hash" and verdict["first_bad_seq"] == seq

    def test_a_time_window_exports_a_range_that_verifies(self, cli, source, tmp_path):
        with Client(cli.url, cli.tokens["carol"]) as carol:
            events = carol.get("/v1/audit/events", params={"limit": 1000})["data"]
        since, until = events[2]["ts"], events[-2]["ts"]
        target = tmp_path / "window.jsonl"
        done = cli(
            "--json",
            "audit",
            "export",
            "-o",
            str(target),
            "--since",
            since,
            "--until",
            until,
            as_="carol",
        )
        assert done.exit_code == 0, done.stderr
        written = json.loads(done.stdout)
        assert written["first_seq"] > 1 and written["last_seq"] < written["tree_size"]
        pem = tmp_path / "key.json"
        with Client(cli.url, cli.tokens["carol"]) as carol:
            pem.write_text(json.dumps(carol.get("/v1/audit/public-key")))
        assert cli("audit", "verify-export", str(target), "--public-key", str(pem)).exit_code == 0
