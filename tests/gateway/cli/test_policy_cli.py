"""`tunegate policy ...` against a real gateway (uvicorn on loopback): plan, apply and
export round-trip a policy file; plan's exit code is a CI check (0: no change, 4: a
change); a concurrent apply gets 409 with both versions; a bad file is refused with every
error at its line; explain names the deciding rule and the role chain that reached it."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from gateway.client import ApiError, Client
from policies import policyfile
from tests.gateway.cli.cli_support import Cli, cast, cli_settings, config_dir, serving
from tests.gateway.conftest import SOURCE

__all__ = ["config_dir"]


@pytest.fixture(scope="module")
def cli(databases, tmp_path_factory, config_dir):
    settings = cli_settings(databases, tmp_path_factory)
    with serving(settings) as url:
        cli = Cli(url, settings, config_dir)
        cast(cli)
        yield cli
        cli.assert_no_token_shown()


def _api(cli: Cli, who: str) -> Client:
    return Client(cli.url, cli.tokens[who])


def _head(cli: Cli) -> int:
    with _api(cli, "ada") as api:
        return api.get("/v1/policies/export")["version"]["id"]


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


POLICY = """\
# the default tenant's policy
tenant: default
roles:
  role:admin:
    - user:ada
  role:ml-engineer:
    - user:bob
grants:
  - {subject: user:bob, object: ds:claims, action: train}   # ticket 12
  - {subject: user:eve, object: ds:claims, action: train, effect: deny}
"""


class TestPolicyAsCode:
    def test_plan_apply_export_round_trip(self, cli, tmp_path):
        start = _head(cli)
        exported = tmp_path / "live.yaml"
        assert cli("policy", "export", "-o", str(exported), as_="ada").exit_code == 0
        unchanged = cli("policy", "plan", str(exported), as_="ada")
        assert unchanged.exit_code == 0, unchanged.stderr
        assert "No changes" in unchanged.stdout

        path = _write(tmp_path / "default.yaml", POLICY)
        planned = cli("policy", "plan", str(path), as_="ada")
        assert planned.exit_code == 4, planned.stderr
        assert f"+ p,user:bob,default,ds:claims,train,allow  {path}:9" in planned.stdout
        assert "user:bob" in planned.stdout and "deny -> allow" in planned.stdout
        as_json = json.loads(cli("policy", "plan", str(path), "--json", as_="ada").stdout)
        assert as_json["base_version"]["id"] == start
        flips = {(c["sub"], c["obj"], c["act"], c["after"]) for c in as_json["access_changes"]}
        assert ("user:bob", "ds:claims", "train", "allow") in flips
        assert ("user:bob", "job:*", "create", "allow") in flips  # through role:ml-engineer

        applied = cli(
            "policy",
            "apply",
            str(path),
            "--expect-version",
            str(start),
            "--reason",
            "ticket 12",
            as_="ada",
        )
        assert applied.exit_code == 0, applied.stderr
        assert f"Applied as policy version {start + 1}" in applied.stdout
        assert cli("policy", "plan", str(path), as_="ada").exit_code == 0

        assert cli("policy", "export", "-o", str(exported), as_="ada").exit_code == 0
        again = policyfile.load(exported)
        assert again.lines.keys() == policyfile.load(path).lines.keys()
        assert cli("policy", "plan", str(exported), as_="ada").exit_code == 0

        versions = cli("policy", "versions", "--limit", "1", as_="carol")
        assert "ticket 12" in versions.stdout and versions.exit_code == 0
        diff = cli("policy", "diff", str(start), str(start + 1), as_="carol")
        assert "+ g,user:bob,role:ml-engineer,default" in diff.stdout
        shown = cli("policy", "show", "--ptype", "g", as_="carol")
        assert "user:bob, role:ml-engineer, default" in shown.stdout

    def test_a_concurrent_apply_gets_409_with_both_versions(self, cli, tmp_path):
        base = _head(cli)
        first = _write(tmp_path / "a.yaml", POLICY.replace("ticket 12", "a") + _grant("alice"))
        second = _write(tmp_path / "b.yaml", POLICY + _grant("bert"))
        assert cli("policy", "plan", str(first), as_="ada").exit_code == 4
        assert cli("policy", "plan", str(second), as_="ada").exit_code == 4
        won = cli(
            "policy", "apply", str(first), "--expect-version", str(base), "--reason", "a", as_="ada"
        )
        assert won.exit_code == 0, won.stderr
        lost = cli(
            "policy",
            "apply",
            str(second),
            "--expect-version",
            str(base),
            "--reason",
            "b",
            as_="ada",
        )
        assert lost.exit_code == 1
        assert "policy_version_conflict" in lost.stderr
        assert f"version {base + 1}" in lost.stderr and f"version {base} as expected" in lost.stderr

        # Two applies racing on the server: one version, one 409.
        base += 1
        outcomes: list[object] = []

        def apply(who: str) -> None:
            body = {
                "expect_version": base,
                "add": [f"p,user:{who},default,ds:claims,read,allow"],
                "reason": who,
            }
            with _api(cli, "ada") as api:
                try:
                    outcomes.append(api.post("/v1/policies/apply", json=body)["id"])
                except ApiError as exc:
                    outcomes.append(exc)

        threads = [threading.Thread(target=apply, args=(who,)) for who in ("carl", "cleo")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        [error] = [o for o in outcomes if isinstance(o, ApiError)]
        assert [o for o in outcomes if not isinstance(o, ApiError)] == [base + 1]
        assert error.status == 409 and error.code == "policy_version_conflict"
        details = error.body["error"]["details"]
        assert details["expected_version"] == base
        assert details["current_version"]["id"] == base + 1

    def test_bad_policy_files_give_file_line_errors(self, cli, tmp_path):
        bad = _write(
            tmp_path / "bad.yaml",
            "tenant: default\nroles:\n  role:admin:\n    - ada\ngrants:\n"
            "  - {subject: user:bob, object: ds:claims, action: fly}\n"
            "  - {subject: user:bob, object: ds:claims, action: train, purpose: chat}\n",
        )
        result = cli("policy", "plan", str(bad), as_="ada")
        assert result.exit_code == 1
        assert f"{bad}:4: member must be user:<sub> or role:<name>: 'ada'" in result.stderr
        assert f"{bad}:6: action: unknown action: 'fly'" in result.stderr
        assert f"{bad}:7: purpose:" in result.stderr
        assert "Traceback" not in result.stderr + result.stdout
        assert (
            cli(
                "policy", "apply", str(bad), "--expect-version", "1", "--reason", "x", as_="ada"
            ).exit_code
            == 1
        )

        # valid YAML the gateway refuses: shown at the line that states the rule
        classes = _write(
            tmp_path / "classes.yaml",
            POLICY + "classes:\n  class:restricted:\n    - ds:claims\n",
        )
        refused = cli("policy", "plan", str(classes), as_="ada")
        assert refused.exit_code == 1
        assert f"{classes}:13: rule_outside_tenant (400)" in refused.stderr
        other = _write(tmp_path / "acme.yaml", POLICY.replace("tenant: default", "tenant: acme"))
        elsewhere = cli("policy", "plan", str(other), as_="ada")
        assert elsewhere.exit_code == 1 and "your token's tenant is 'default'" in elsewhere.stderr

    def test_explain_names_the_deciding_rule_and_the_role_chain(self, cli, tmp_path):
        with _api(cli, "dora") as dora, _api(cli, "carol") as carol:
            body = {**SOURCE, "name": "restricted chats", "classification": "restricted"}
            source = dora.post("/v1/data_sources", json=body)
            carol.post(f"/v1/data_sources/{source['id']}/approve")
        obj = f"ds:{source['id']}"
        path = _write(tmp_path / "explain.yaml", POLICY + _grant("bob", obj=obj, act="train"))
        base = _head(cli)
        applied = cli(
            "policy",
            "apply",
            str(path),
            "--expect-version",
            str(base),
            "--reason",
            "bob trains",
            as_="ada",
        )
        assert applied.exit_code == 0, applied.stderr

        found = cli(
            "policy",
            "explain",
            "user:bob",
            "default",
            obj,
            "train",
            "--purpose",
            "support-assistant",
            as_="carol",
        )
        assert found.exit_code == 0, found.stderr
        assert found.stdout.startswith("deny under policy version")
        assert "decided by: role:ml-engineer, *, class:restricted, train, deny" in found.stdout
        assert "role chain: user:bob -(g)-> role:ml-engineer" in found.stdout
        assert "deny overrides" in found.stdout
        assert "purpose support-assistant: allowed" in found.stdout

        as_json = json.loads(
            cli(
                "policy", "explain", "user:bob", "default", obj, "train", "--json", as_="carol"
            ).stdout
        )
        deciding = [m for m in as_json["matched"] if m["deciding"]]
        assert [m["rule"][0] for m in deciding] == ["role:ml-engineer"]
        assert deciding[0]["object_chain"] == [
            {"source": obj, "target": "class:restricted", "via": f"g2,{obj},class:restricted"}
        ]
        assert {m["effect"] for m in as_json["matched"]} == {"allow", "deny"}
        refused = cli("policy", "explain", "user:bob", "default", obj, "train", as_="bob")
        assert refused.exit_code == 1 and "permission_denied" in refused.stderr


def _grant(who: str, *, obj: str = "ds:claims", act: str = "read") -> str:
    return f"  - {{subject: user:{who}, object: {obj}, action: {act}}}\n"
