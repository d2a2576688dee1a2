"""The C2SP surface of the audit API: signed-note checkpoints, their history, consistency
proofs and tlog-proof bundles, each checked offline the way an outside tool would (the
audit.note verifier is itself tested on the Go sumdb vectors)."""

from __future__ import annotations

import base64
import json

from typer.testing import CliRunner

from audit.merkle import verify_consistency
from audit.note import open_checkpoint, parse_vkey
from gateway.cli import app as cli

ORIGIN = "tunegate.example.com/audit/global"


def _officer(token):
    return token("carol", "compliance-officer")


def _make_events(client, token, n: int) -> None:
    admin = token("root", "admin")
    for i in range(n):
        rule = {"ptype": "p", "values": [f"user:c{i}", "default", "ds:x", "read", "allow"]}
        response = client.post("/v1/policies/rules", json={"rules": [rule]}, headers=admin)
        assert response.status_code == 201


def _vkey(client, officer) -> str:
    key = client.get("/v1/audit/public-key", headers=officer).json()
    assert key["origin"] == ORIGIN and key["key_name"] == ORIGIN
    return key["vkey"]


class TestCheckpointNote:
    def test_latest_is_a_signed_note_with_the_spec_key_id(self, client, token):
        _make_events(client, token, 2)
        officer = _officer(token)
        response = client.get("/v1/audit/checkpoint", headers=officer)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        verifier = parse_vkey(_vkey(client, officer))
        checkpoint, sigs = open_checkpoint(response.text, [verifier], origin=ORIGIN)
        lines = response.text.split("\n")
        assert lines[0] == ORIGIN and lines[1] == str(checkpoint.size) and lines[3] == ""
        assert lines[4].startswith(f"— {ORIGIN} ")
        assert base64.b64decode(lines[4].split()[-1])[:4] == verifier.key_id == sigs[0].key_id
        assert len(lines) == 6 and lines[5] == ""  # no extension lines, one signature

    def test_the_console_json_carries_the_same_checkpoint_as_a_note(self, client, token):
        officer = _officer(token)
        doc = client.get("/v1/audit/checkpoints/latest", headers=officer).json()
        checkpoint, _ = open_checkpoint(doc["signed_note"], [parse_vkey(_vkey(client, officer))])
        assert checkpoint.size == doc["tree_size"]
        assert checkpoint.root.hex() == doc["root_hash"]


class TestHistory:
    def test_pages_of_signed_notes_follow_the_cursor(self, client, token):
        officer = _officer(token)
        for _ in range(3):  # each read is audited, so each signs a new checkpoint
            client.get("/v1/audit/checkpoint", headers=officer)
        verifier = parse_vkey(_vkey(client, officer))
        first = client.get("/v1/audit/checkpoints", params={"limit": 2}, headers=officer).json()
        assert len(first["data"]) == 2 and first["has_more"]
        rest = client.get(
            "/v1/audit/checkpoints", params={"after": first["next_after"]}, headers=officer
        ).json()
        items = first["data"] + rest["data"]
        sizes = [item["tree_size"] for item in items]
        assert sizes == sorted(sizes) and len(items) >= 3
        for item in items:
            checkpoint, _ = open_checkpoint(item["note"], [verifier], origin=ORIGIN)
            assert checkpoint.size == item["tree_size"]
            assert base64.b64encode(checkpoint.root).decode() == item["root_hash"]
            assert item["ts"].endswith("Z")

    def test_bad_paging_is_400(self, client, token):
        for params in ({"limit": 0}, {"limit": 1001}, {"after": -1}):
            response = client.get("/v1/audit/checkpoints", params=params, headers=_officer(token))
            assert response.status_code == 400, params


class TestConsistency:
    def test_a_proof_between_two_kept_checkpoints_verifies(self, client, token, tmp_path):
        officer = _officer(token)
        old = client.get("/v1/audit/checkpoint", headers=officer).text
        _make_events(client, token, 3)
        new = client.get("/v1/audit/checkpoint", headers=officer).text
        verifier = parse_vkey(_vkey(client, officer))
        old_cp, _ = open_checkpoint(old, [verifier])
        new_cp, _ = open_checkpoint(new, [verifier])
        proof = client.get(
            "/v1/audit/consistency",
            params={"first": old_cp.size, "second": new_cp.size},
            headers=officer,
        ).json()
        assert (proof["first"], proof["second"]) == (old_cp.size, new_cp.size)
        hashes = [base64.b64decode(h) for h in proof["hashes"]]
        verify_consistency(old_cp.size, new_cp.size, old_cp.root, new_cp.root, hashes)

        (tmp_path / "old").write_text(old)
        (tmp_path / "new").write_text(new)
        (tmp_path / "proof.json").write_text(json.dumps(proof))
        (tmp_path / "key").write_text(verifier.vkey)
        args = ["audit", "verify-consistency", str(tmp_path / "old"), str(tmp_path / "new")]
        args += ["--proof", str(tmp_path / "proof.json"), "--key", str(tmp_path / "key")]
        result = CliRunner().invoke(cli, [*args, "--json"])
        assert result.exit_code == 0, result.output
        assert json.loads(result.output)["ok"] is True

        proof["hashes"][0] = base64.b64encode(bytes(32)).decode()
        (tmp_path / "proof.json").write_text(json.dumps(proof))
        forged = CliRunner().invoke(cli, [*args, "--json"])
        assert forged.exit_code == 1
        assert json.loads(forged.output)["code"] == "consistency"

    def test_bad_sizes_are_400_with_a_reason(self, client, token):
        officer = _officer(token)
        size = open_checkpoint(
            client.get("/v1/audit/checkpoint", headers=officer).text,
            [parse_vkey(_vkey(client, officer))],
        )[0].size
        for params, param in (
            ({"first": size, "second": size - 1}, "first"),
            ({"first": 1, "second": size + 1000}, "second"),
            ({"first": size + 1000}, "first"),
        ):
            response = client.get("/v1/audit/consistency", params=params, headers=officer)
            assert response.status_code == 400, (params, response.text)
            error = response.json()["error"]
            assert error["code"] == "tree_size_out_of_range", (params, error)
            assert error["param"] == param, (params, error)
            assert error["message"]
        for params in ({}, {"first": -1}, {"first": 2**70}):
            response = client.get("/v1/audit/consistency", params=params, headers=officer)
            assert response.status_code == 400, params

    def test_engineers_are_refused(self, client, token):
        engineer = token("bob", "ml-engineer")
        for path in ("/v1/audit/checkpoint", "/v1/audit/checkpoints", "/v1/audit/consistency"):
            response = client.get(path, params={"first": 0}, headers=engineer)
            assert response.status_code == 403, path


class TestTlogProof:
    def test_bundle_verifies_offline_and_tampering_is_named(self, client, token, tmp_path):
        _make_events(client, token, 3)
        officer = _officer(token)
        event = client.get(
            "/v1/audit/events", params={"action": "policy.rules_added"}, headers=officer
        ).json()["data"][1]
        response = client.get(
            f"/v1/audit/events/{event['seq']}/proof",
            params={"format": "tlog-proof"},
            headers=officer,
        )
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        bundle = response.text
        lines = bundle.split("\n")
        assert lines[0] == "c2sp.org/tlog-proof@v1"
        assert lines[1].startswith("extra ") and lines[2] == f"index {event['seq'] - 1}"
        assert f"\n\n{ORIGIN}\n" in bundle

        by_accept = client.get(
            f"/v1/audit/events/{event['seq']}/proof",
            headers={**officer, "Accept": "text/plain"},
        )
        assert by_accept.text.startswith("c2sp.org/tlog-proof@v1\n")

        key = client.get("/v1/audit/public-key", headers=officer).json()
        (tmp_path / "key.json").write_text(json.dumps(key))
        (tmp_path / "p.tlog-proof").write_text(bundle)
        path = str(tmp_path / "p.tlog-proof")
        for key_args in (
            [str(tmp_path / "key.json")],  # the public-key JSON as the second argument
            ["--key", key["vkey"]],
        ):
            result = CliRunner().invoke(cli, ["audit", "verify-proof", path, *key_args])
            assert result.exit_code == 0, result.output
            assert json.loads(result.output)["ok"] is True

        hashes_start = bundle.index("\n", bundle.index("\nindex ") + 1) + 1
        flipped = "A" if bundle[hashes_start] != "A" else "B"
        tampered = bundle[:hashes_start] + flipped + bundle[hashes_start + 1 :]
        (tmp_path / "p.tlog-proof").write_text(tampered)
        result = CliRunner().invoke(cli, ["audit", "verify-proof", path, "--key", key["vkey"]])
        assert result.exit_code == 1
        assert json.loads(result.output)["code"] == "inclusion"

        resized = bundle.replace(f"\n{ORIGIN}\n", f"\n{ORIGIN}\n1", 1)
        (tmp_path / "p.tlog-proof").write_text(resized)
        result = CliRunner().invoke(cli, ["audit", "verify-proof", path, "--key", key["vkey"]])
        assert result.exit_code == 1
        assert json.loads(result.output)["code"] == "signature"

    def test_a_size_with_no_checkpoint_is_404(self, client, token):
        _make_events(client, token, 2)
        officer = _officer(token)
        event = client.get("/v1/audit/events", headers=officer).json()["data"][0]
        sizes = {
            item["tree_size"]
            for item in client.get(
                "/v1/audit/checkpoints", params={"limit": 1000}, headers=officer
            ).json()["data"]
        }
        unsigned = next(n for n in range(event["seq"], 10**6) if n not in sizes)
        response = client.get(
            f"/v1/audit/events/{event['seq']}/proof",
            params={"format": "tlog-proof", "tree_size": unsigned},
            headers=officer,
        )
        assert response.status_code == 404, response.text
        assert response.json()["error"]["code"] == "audit_checkpoint_not_found"
