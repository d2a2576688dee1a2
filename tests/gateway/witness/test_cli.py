"""`tunegate witness init|vkey|verify` through the real command line (typer's runner)."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from typer.testing import CliRunner

from audit.cosignature import cosign, cosigner_vkey, parse_cosigner_vkey
from audit.note import add_signature_lines, ed25519_vkey, sign_note
from gateway.cli import app
from gateway.witness.app import load_key

runner = CliRunner()
TEXT = "log.test/audit\n5\n" + "A" * 43 + "=\n"


def test_init_vkey_verify(tmp_path):
    key = tmp_path / "w.pem"
    made = runner.invoke(app, ["witness", "init", "--key", str(key), "--name", "w.test/1"])
    assert made.exit_code == 0, made.output
    vkey = made.output.strip()
    assert parse_cosigner_vkey(vkey).name == "w.test/1"
    again = runner.invoke(app, ["witness", "init", "--key", str(key), "--name", "w.test/1"])
    assert again.exit_code == 1  # never overwrites a key
    shown = runner.invoke(app, ["witness", "vkey", "--key", str(key), "--name", "w.test/1"])
    assert shown.output.strip() == vkey

    log = Ed25519PrivateKey.generate()
    note = sign_note(TEXT, name="log.test/audit", private_key=log)
    line = cosign(TEXT, name="w.test/1", private_key=load_key(key), timestamp=7).line()
    (tmp_path / "cp").write_text(add_signature_lines(note, [line]))
    log_vkey = ed25519_vkey("log.test/audit", log.public_key())
    args = ["witness", "verify", str(tmp_path / "cp"), "--log", log_vkey, "--witness", vkey]
    ok = runner.invoke(app, [*args, "--quorum", "1"])
    assert ok.exit_code == 0, ok.output
    other = cosigner_vkey("w.test/2", Ed25519PrivateKey.generate().public_key())
    short = runner.invoke(app, [*args, "--quorum", "2", "--witness", other])
    assert short.exit_code == 1
    assert "1 of the 2" in short.output
    (tmp_path / "bare").write_text(note)
    bare = runner.invoke(app, ["witness", "verify", str(tmp_path / "bare"), "--witness", vkey])
    assert bare.exit_code == 1


def test_serve_runs_a_witness_process(tmp_path):
    """`tunegate witness serve` as its own process: it answers, and knows the log."""
    import socket
    import subprocess
    import sys
    import time

    import httpx

    key = tmp_path / "w.pem"
    assert (
        runner.invoke(app, ["witness", "init", "--key", str(key), "--name", "w.test/1"]).exit_code
        == 0
    )
    log = Ed25519PrivateKey.generate()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = [sys.executable, "-m", "gateway.cli", "witness", "serve", "--key", str(key)]
    args += ["--name", "w.test/1", "--db", str(tmp_path / "w.db"), "--port", str(port)]
    args += ["--log", ed25519_vkey("log.test/audit", log.public_key())]
    process = subprocess.Popen(args)  # noqa: S603 (our own interpreter and module)
    try:
        deadline = time.monotonic() + 30
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as http:
            while True:
                try:
                    http.get("/healthz")
                    break
                except httpx.TransportError:
                    assert time.monotonic() < deadline and process.poll() is None
                    time.sleep(0.1)
            body = b"old 0\n\n" + sign_note(TEXT, name="log.test/audit", private_key=log).encode()
            answer = http.post("/add-checkpoint", content=body)
            assert answer.status_code == 200, answer.text
            assert answer.text.startswith("— w.test/1 ")
    finally:
        process.terminate()
        process.wait(timeout=30)
