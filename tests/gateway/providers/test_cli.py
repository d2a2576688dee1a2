"""`tunegate providers create|list|show|delete|export-check` against a real gateway: the
platform admin's commands (`root`), the API's refusals as exit codes, and neither the token
nor the provider's key ever printed."""

from __future__ import annotations

import json
import secrets

import pytest

from policies.vocabulary import PLATFORM_ADMIN_ROLE, PLATFORM_TENANT
from tests.gateway.cli.cli_support import Cli, cast, cli_settings, config_dir, serving

__all__ = ["config_dir"]

KEY_VAR = "TUNEGATE_PROVIDER_CLI_KEY"


@pytest.fixture(scope="module")
def key():
    """The provider's key, in the environment of the gateway (which runs in this process)."""
    value = f"sk-cli-{secrets.token_hex(16)}"
    patch = pytest.MonkeyPatch()
    patch.setenv(KEY_VAR, value)
    yield value
    patch.undo()


@pytest.fixture(scope="module")
def cli(databases, tmp_path_factory, config_dir, key):
    settings = cli_settings(databases, tmp_path_factory)
    with serving(settings) as url:
        tool = Cli(url, settings, config_dir)
        cast(tool)
        _platform_admin(tool)
        yield tool
    tool.assert_no_token_shown()
    assert not any(key in text for text in tool.outputs)


def _platform_admin(cli: Cli) -> None:
    """`root`: the platform admin, who alone registers and retires providers."""
    from gateway.security import mint_dev_token

    cli.tokens["root"] = mint_dev_token(
        cli.settings, sub="root", roles=[PLATFORM_ADMIN_ROLE], tenant=PLATFORM_TENANT, ttl=3600
    )


def _create(cli: Cli, name: str, *extra: str, as_: str = "root"):
    return cli(
        "--json",
        "providers",
        "create",
        "--name",
        name,
        "--base-url",
        f"https://{name}.example/v1",
        "--model",
        f"{name}-llama=meta-llama/Meta-Llama-3.1-8B-Instruct",
        "--region",
        "eu-west-1",
        "--region",
        "eu-central-1",
        "--credential-ref",
        f"env:{KEY_VAR}",
        *extra,
        as_=as_,
    )


@pytest.fixture(scope="module")
def acme(cli) -> dict:
    result = _create(cli, "acme", "--description", "Acme fine-tuning")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


class TestProvidersCli:
    def test_create_prints_the_provider(self, acme):
        assert acme["name"] == "acme" and acme["status"] == "active"
        assert acme["regions"] == ["eu-west-1", "eu-central-1"]
        assert acme["models"] == [
            {"name": "acme-llama", "provider_model": "meta-llama/Meta-Llama-3.1-8B-Instruct"}
        ]
        assert acme["credential_ref"] == f"env:{KEY_VAR}"

    @pytest.mark.parametrize("who", ["ada", "bob"])
    def test_only_the_platform_admin_creates(self, cli, who):
        result = _create(cli, "beta", as_=who)
        assert result.exit_code == 1
        assert "permission_denied (403)" in result.stderr

    def test_a_refused_body_names_its_fault(self, cli):
        result = _create(cli, "Not-A-Slug")
        assert result.exit_code == 1
        assert "invalid_request (400)" in result.stderr and "[param name]" in result.stderr
        malformed = cli(
            "providers",
            "create",
            "--name",
            "x",
            "--base-url",
            "https://x.example",
            "--model",
            "no-equals-sign",
            "--region",
            "eu",
            "--credential-ref",
            f"env:{KEY_VAR}",
            as_="root",
        )
        assert malformed.exit_code == 2 and "NAME=PROVIDER_MODEL" in malformed.stderr

    def test_list_and_show(self, cli, acme):
        listed = cli("providers", "list", as_="bob")
        assert listed.exit_code == 0, listed.stderr
        assert "acme" in listed.stdout and "https://acme.example/v1" in listed.stdout
        as_json = json.loads(cli("--json", "providers", "list", as_="bob").stdout)
        assert "acme" in [p["name"] for p in as_json["data"]]
        shown = cli("providers", "show", "acme", as_="carol")
        assert shown.exit_code == 0
        assert f"credential_ref: env:{KEY_VAR}" in shown.stdout
        missing = cli("providers", "show", "nobody", as_="carol")
        assert missing.exit_code == 1 and "provider_not_found (404)" in missing.stderr

    def test_export_check_says_why_not(self, cli, acme):
        source = json.loads(
            cli(
                "--json",
                "data-sources",
                "propose",
                "--name",
                "exports",
                "--classification",
                "internal",
                "--purpose",
                "support-assistant",
                "--owner",
                "dora",
                "--retention-days",
                "30",
                as_="dora",
            ).stdout
        )
        assert cli("data-sources", "approve", source["id"], as_="carol").exit_code == 0
        refused = cli("providers", "export-check", "acme", "--data-source", source["id"], as_="bob")
        assert refused.exit_code == 1
        assert "refused" in refused.stdout and "policy: permission_denied" in refused.stdout
        decision = cli(
            "--json", "providers", "export-check", "acme", "--data-source", source["id"], as_="bob"
        )
        assert json.loads(decision.stdout)["allowed"] is False

    def test_delete_retires(self, cli):
        assert _create(cli, "gamma").exit_code == 0
        refused = cli("providers", "delete", "gamma", as_="ada")  # a tenant's admin
        assert refused.exit_code == 1 and "permission_denied (403)" in refused.stderr
        deleted = cli("providers", "delete", "gamma", as_="root")
        assert deleted.exit_code == 0, deleted.stderr
        assert "status: retired" in deleted.stdout
        again = cli("providers", "delete", "gamma", as_="root")
        assert again.exit_code == 1 and "provider_retired (409)" in again.stderr
        retired = json.loads(
            cli("--json", "providers", "list", "--status", "retired", as_="ada").stdout
        )
        assert [p["name"] for p in retired["data"]] == ["gamma"]
