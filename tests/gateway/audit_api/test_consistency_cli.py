"""`tunegate audit verify-consistency` against a real gateway (uvicorn on loopback): the
user keeps a checkpoint, the gateway grows, and the tool fetches the newer checkpoint and
the proof, checks them under the key the user trusts, and keeps the newer one."""

from __future__ import annotations

import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit.note import ed25519_vkey
from gateway.client import Client
from tests.gateway.cli.cli_support import Cli, cast, cli_settings, config_dir, serving

__all__ = ["config_dir"]


@pytest.fixture(scope="module")
def cli(databases, tmp_path_factory, config_dir):
    settings = cli_settings(databases, tmp_path_factory, audit_origin="audit.test/global")
    with serving(settings) as url:
        tool = Cli(url, settings, config_dir)
        cast(tool)
        yield tool
    tool.assert_no_token_shown()


def test_fetch_check_and_keep_the_newer_checkpoint(cli, tmp_path):
    with Client(cli.url, cli.tokens["carol"]) as carol:
        old = carol.get("/v1/audit/checkpoint")
        vkey = carol.get("/v1/audit/public-key")["vkey"]
        carol.get("/v1/audit/events")  # the trail grows (reads are audited)
    assert old.startswith("audit.test/global\n") and vkey.startswith("audit.test/global+")
    kept, newer = tmp_path / "old.checkpoint", tmp_path / "new.checkpoint"
    kept.write_text(old)
    args = ["--json", "audit", "verify-consistency", str(kept), "--key", vkey]
    result = cli(*args, "--save", str(newer), as_="carol")
    assert result.exit_code == 0, result.stdout + result.stderr
    verdict = json.loads(result.stdout)
    assert verdict["ok"] and verdict["new_size"] > verdict["old_size"]
    assert newer.read_text().startswith("audit.test/global\n")

    # checked under a key that is not the gateway's (same name): refused, nothing kept
    stranger = ed25519_vkey("audit.test/global", Ed25519PrivateKey.generate().public_key())
    newer.unlink()
    refused = cli(*args[:-1], stranger, "--save", str(newer), as_="carol")
    assert refused.exit_code == 1
    assert json.loads(refused.stdout)["code"] == "signature"
    assert not newer.exists()
