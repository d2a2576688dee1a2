"""`make demo`: the governed core end to end on the embedded defaults.

A SQLite database in a temporary folder, a real `tunegate serve` on a free loopback port,
and httpx as the client: a denied check, a grant through the admin API, the same check
allowed (with the rule and policy version that decided), the audit trail listed, its
chain verified, and one event's inclusion proof checked offline against the signed
checkpoint.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

from gateway.bootstrap import prepare_database
from gateway.config import Settings
from gateway.security import mint_dev_token

console = Console(width=150)
DATA_SOURCE = "ds:claims-2024"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_ready(base_url: str, server: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server exited with status {server.returncode}")
        try:
            if httpx.get(f"{base_url}/readyz", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise SystemExit("the server did not become ready in time")


def _show(title: str, response: httpx.Response) -> dict:
    style = "green" if response.is_success else "red"
    console.print(f"[bold]{title}[/bold] -> [{style}]{response.status_code}[/{style}]")
    body = response.json()
    console.print_json(json.dumps(body))
    return body


def _what(details: dict) -> str:
    if "request" in details:
        asked = details["request"]
        return f"{asked['sub']} {asked['act']} {asked['obj']}? {details['decision']}"
    if details.get("added"):
        return "+ " + "; ".join(details["added"])
    return f"{details.get('method', '')} {details.get('route', '')}".strip()


def run(workdir: Path) -> None:
    env = {
        **os.environ,
        "TUNEGATE_ENV": "dev",
        "TUNEGATE_DATABASE_URL": f"sqlite:///{workdir / 'tunegate.db'}",
        "TUNEGATE_ARTIFACT_DIR": str(workdir / "artifacts"),
    }
    settings = Settings(
        env="dev",
        database_url=env["TUNEGATE_DATABASE_URL"],
        artifact_dir=workdir / "artifacts",
    )
    console.rule("tunegate demo: the governed core")
    console.print(f"working folder: {workdir}")
    prepare_database(settings)
    console.print("schema migrated to head; seed policy loaded as version 1")

    port = _free_port()
    base_url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(  # noqa: S603 - our own console script
        [sys.executable, "-m", "gateway.cli", "serve", "--port", str(port)], env=env
    )
    try:
        _wait_ready(base_url, server)
        console.print(f"gateway serving at {base_url}")
        admin = {"Authorization": "Bearer " + mint_dev_token(settings, sub="ada", roles=["admin"])}
        engineer = {
            "Authorization": "Bearer "
            + mint_dev_token(settings, sub="bob", roles=["ml-engineer"])
        }
        officer = {
            "Authorization": "Bearer "
            + mint_dev_token(settings, sub="carol", roles=["compliance-officer"])
        }
        check = {"sub": "user:bob", "obj": DATA_SOURCE, "act": "train", "roles": ["ml-engineer"]}
        with httpx.Client(base_url=base_url, timeout=30.0) as http:
            console.rule("1. an engineer may not edit the policy")
            _show("bob: POST /v1/policies/rules", http.post(
                "/v1/policies/rules", headers=engineer,
                json={"rules": [{"ptype": "p", "values": [
                    "user:bob", "default", DATA_SOURCE, "train", "allow"]}]},
            ))  # fmt: skip

            console.rule("2. may bob train on the claims data? (dry run by the admin)")
            _show("ada: POST /v1/policies/check", http.post(
                "/v1/policies/check", headers=admin, json=check))

            console.rule("3. the admin grants it")
            version = _show("ada: POST /v1/policies/rules", http.post(
                "/v1/policies/rules", headers=admin,
                json={"reason": "claims triage pilot", "rules": [{"ptype": "p", "values": [
                    "user:bob", "default", DATA_SOURCE, "train", "allow"]}]},
            ))  # fmt: skip

            console.rule("4. the same check is now allowed, by that rule, under that version")
            allowed = _show("ada: POST /v1/policies/check", http.post(
                "/v1/policies/check", headers=admin, json=check))
            assert allowed["decision"] == "allow"
            assert allowed["policy_version"] == version["hash"]

            console.rule("5. the audit trail (compliance officer)")
            events = http.get("/v1/audit/events", headers=officer, params={"limit": 50})
            table = Table(
                "seq", "actor", "action", "resource", "decision", "policy version", "what"
            )
            for event in events.json()["data"]:
                table.add_row(
                    str(event["seq"]), event["actor"], event["action"], event["resource"],
                    event["decision"], (event["policy_version"] or "")[:12],
                    _what(event["details"]),
                )  # fmt: skip
            console.print(table)

            console.rule("6. verify the chain, and prove one event against a signed checkpoint")
            verified = _show("carol: GET /v1/audit/verify", http.get(
                "/v1/audit/verify", headers=officer))
            checkpoint = http.get("/v1/audit/checkpoints/latest", headers=officer).json()
            grant_event = next(
                e for e in events.json()["data"] if e["action"] == "policy.rules_added"
            )
            proof = http.get(
                f"/v1/audit/events/{grant_event['seq']}/proof", headers=officer,
                params={"tree_size": checkpoint["tree_size"]},
            ).json()  # fmt: skip
            key = http.get("/v1/audit/public-key", headers=officer).json()
        for name, document in (("proof.json", proof), ("checkpoint.json", checkpoint)):
            (workdir / name).write_text(json.dumps(document))
        (workdir / "audit-public-key.pem").write_text(key["public_key_pem"])
        offline = subprocess.run(  # noqa: S603 - our own console script
            [sys.executable, "-m", "gateway.cli", "audit", "verify-proof",
             str(workdir / "proof.json"), str(workdir / "checkpoint.json"),
             str(workdir / "audit-public-key.pem")],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        console.print(f"tunegate audit verify-proof (offline): {offline.stdout.strip()}")
        if not verified["ok"] or offline.returncode != 0:
            raise SystemExit("audit verification failed")
        console.rule("[green]done: denied, granted, allowed, audited, verified[/green]")
    finally:
        server.terminate()
        server.wait(timeout=10)


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="tunegate-demo-") as workdir:
        run(Path(workdir))


if __name__ == "__main__":
    main()
