from __future__ import annotations

import json

from typer.testing import CliRunner

from gateway.cli import app as cli


def _officer(token):
    return token("carol", "compliance-officer")


def _make_events(client, token, n: int) -> None:
    """Governed changes, each of which writes audit events."""
    admin = token("root", "admin")
    for i in range(n):
        rule = {"ptype": "p", "values": [f"user:u{i}", "default", "ds:x", "read", "allow"]}
        assert (
            client.post("/v1/policies/rules", json={"rules": [rule]}, headers=admin).status_code
            == 201
        )


class TestReadingTheTrail:
    def test_pages_follow_the_cursor_and_filters_apply(self, client, token):
        _make_events(client, token, 5)
        officer = _officer(token)
        first = client.get(
            "/v1/audit/events", params={"limit": 2, "action": "policy.rules_added"}, headers=officer
        ).json()
        assert [e["action"] for e in first["data"]] == ["policy.rules_added"] * 2
        assert first["has_more"]
        rest = client.get(
            "/v1/audit/events",
            params={"limit": 100, "after": first["next_after"], "action": "policy.rules_added"},
            headers=officer,
        ).json()
        assert len(rest["data"]) == 3 and not rest["has_more"]
        seqs = [e["seq"] for e in first["data"] + rest["data"]]
        assert seqs == sorted(seqs)

    def test_every_read_is_itself_audited(self, client, token):
        officer = _officer(token)
        client.get("/v1/audit/events", headers=officer)
        client.get("/v1/audit/verify", headers=officer)
        client.get("/v1/audit/export", headers=officer)
        actions = [
            e["action"]
            for e in client.get(
                "/v1/audit/events", params={"actor": "carol"}, headers=officer
            ).json()["data"]
        ]
        assert actions[:3] == ["audit.read", "audit.verified", "audit.exported"]

    def test_another_tenants_events_are_invisible(self, client, token):
        _make_events(client, token, 1)
        outsider = token("dave", "compliance-officer", tenant="acme")
        events = client.get("/v1/audit/events", headers=outsider).json()["data"]
        assert {e["tenant"] for e in events} <= {"acme"}
        widened = client.get("/v1/audit/events", params={"tenant": "default"}, headers=outsider)
        assert widened.status_code == 404

    def test_bad_filters_are_400(self, client, token):
        officer = _officer(token)
        for params in ({"since": "yesterday"}, {"limit": 0}, {"after": -1}, {"decision": "maybe"}):
            response = client.get("/v1/audit/events", params=params, headers=officer)
            assert response.status_code == 400, (params, response.text)
            assert response.json()["error"]["code"] in {"invalid_request", "invalid_filter"}

    def test_engineers_cannot_read_the_trail(self, client, token):
        assert (
            client.get("/v1/audit/events", headers=token("bob", "ml-engineer")).status_code == 403
        )

    def test_there_is_no_route_that_writes_to_the_trail(self, client):
        paths = client.get("/openapi.json").json()["paths"]
        for path, operations in paths.items():
            if path.startswith("/v1/audit"):
                assert set(operations) == {"get"}, path


class TestVerifyAndExport:
    def test_verify_reports_an_intact_chain(self, client, token):
        _make_events(client, token, 3)
        result = client.get("/v1/audit/verify", headers=_officer(token)).json()
        assert result["ok"] is True and result["first_bad_seq"] is None
        assert result["length"] >= 4  # seed + 3 changes
        assert len(result["head"]) == 64

    def test_export_streams_jsonl_of_the_callers_tenant(self, client, token):
        _make_events(client, token, 3)
        response = client.get("/v1/audit/export", headers=_officer(token))
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/x-ndjson")
        lines = [json.loads(line) for line in response.text.splitlines()]
        assert len(lines) >= 3
        assert {line["tenant"] for line in lines} == {"default"}
        assert all(len(line["hash"]) == 64 for line in lines)


class TestProofs:
    def test_a_proof_verifies_offline_against_the_signed_checkpoint(self, client, token, tmp_path):
        _make_events(client, token, 5)
        officer = _officer(token)
        event = client.get(
            "/v1/audit/events", params={"action": "policy.rules_added"}, headers=officer
        ).json()["data"][2]
        checkpoint = client.get("/v1/audit/checkpoints/latest", headers=officer).json()
        proof = client.get(
            f"/v1/audit/events/{event['seq']}/proof",
            params={"tree_size": checkpoint["tree_size"]},
            headers=officer,
        ).json()
        key = client.get("/v1/audit/public-key", headers=officer).json()
        (tmp_path / "proof.json").write_text(json.dumps(proof))
        (tmp_path / "checkpoint.json").write_text(json.dumps(checkpoint))
        (tmp_path / "key.pem").write_text(key["public_key_pem"])
        files = [str(tmp_path / name) for name in ("proof.json", "checkpoint.json", "key.pem")]

        result = CliRunner().invoke(cli, ["audit", "verify-proof", *files])
        assert result.exit_code == 0, result.output
        assert json.loads(result.output)["ok"] is True

        proof["hashes"][0] = "00" * 32
        (tmp_path / "proof.json").write_text(json.dumps(proof))
        forged = CliRunner().invoke(cli, ["audit", "verify-proof", *files])
        assert forged.exit_code == 1
        assert json.loads(forged.output)["ok"] is False

    def test_unknown_event_is_404(self, client, token):
        response = client.get("/v1/audit/events/999999/proof", headers=_officer(token))
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "audit_event_not_found"

    def test_huge_seq_is_400_not_500(self, client, token):
        response = client.get(f"/v1/audit/events/{2**70}/proof", headers=_officer(token))
        assert response.status_code == 400
