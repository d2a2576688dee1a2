"""The evidence bundle (issue 16 §5): built once per module for a registered, promoted
model (the registry tests' cast and factories), then checked by both verifiers, whole and
with each part corrupted in turn (each must name the part). The model.registered event is
recorded here as the worker records it: the factories write the worker's rows directly."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlmodel import Session
from typer.testing import CliRunner

from audit.cosignature import cosign, cosigner_vkey
from tests.gateway.conftest import SOURCE, good_file, upload
from tests.gateway.registry import factories
from tests.gateway.registry.conftest import promote, with_pii

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = ROOT / "audit" / "verify_bundle.py"
WITNESS = "witness.example.org/w1"
WITNESS_KEY = Ed25519PrivateKey.generate()
WITNESS_VKEY = cosigner_vkey(WITNESS, WITNESS_KEY.public_key())
ROLES = {
    "dora": "data-owner",
    "carol": "compliance-officer",
    "cora": "compliance-officer",
    "bob": "ml-engineer",
    "eve": "ml-engineer",
    "ada": "admin",
}


@pytest.fixture(scope="module")
def built(databases, backend, tmp_path_factory):
    """A gateway, a model trained on two files of an approved source and promoted, and
    its evidence bundle as carol downloaded it."""
    from fastapi.testclient import TestClient

    from gateway.audit_api.service import record
    from gateway.bootstrap import seed_policy
    from gateway.config import Settings
    from gateway.main import create_app
    from gateway.registry.models import ModelVersion
    from gateway.security import mint_dev_token
    from gateway.witness.models import AuditCosignature

    engine = databases.engine(backend)
    seed_policy(engine)
    settings = Settings(
        database_url=engine.url.render_as_string(hide_password=False),
        env="dev",
        artifact_dir=tmp_path_factory.mktemp("evidence") / "artifacts",
        audit_checkpoint_every=50,
        policy_poll_seconds=0.2,
        ingest_workers=0,
        local_workers=0,
    )

    def token(sub: str, role: str, tenant: str = "default") -> dict:
        value = mint_dev_token(settings, sub=sub, roles=[role], tenant=tenant, ttl=3600)
        return {"Authorization": f"Bearer {value}"}

    people = {sub: token(sub, role) for sub, role in ROLES.items()}
    with TestClient(create_app(settings)) as client:
        proposed = client.post(
            "/v1/data_sources", json={**SOURCE, "pii_action": "redact"}, headers=people["dora"]
        )
        assert proposed.status_code == 201, proposed.text
        source = client.post(
            f"/v1/data_sources/{proposed.json()['id']}/approve", headers=people["carol"]
        ).json()
        files = [
            upload(client, people["dora"], data_source=source["id"], content=content).json()
            for content in (with_pii(), good_file(4))
        ]
        factories.base_model(settings)
        model_id = factories.fine_tuned_model(settings, files=files)
        with Session(engine) as session:
            model = session.get(ModelVersion, model_id)
            record(
                session,
                actor="worker:test",
                tenant="default",
                action="model.registered",
                resource=f"model:{model_id}",
                decision="allow",
                details={
                    "model_id": model_id,
                    "job_id": model.job_id,
                    "adapter_sha256": model.adapter_sha256,
                    "data_files": [
                        {"file_id": f["id"], "content_sha256": f["content_sha256"]} for f in files
                    ],
                },
            )
            session.commit()
        promote(client, people, model_id)
        # A witness cosigns the checkpoint over all of that, and the gateway stores its
        # line as the pusher does (gateway.witness.pusher, which needs a witness server).
        note = client.get("/v1/audit/checkpoint", headers=people["carol"])
        assert note.status_code == 200, note.text
        text = note.text[: note.text.rfind("\n\n") + 1]
        _, size, root = text.split("\n")[:3]
        cosignature = cosign(text, name=WITNESS, private_key=WITNESS_KEY, timestamp=1_800_000_000)
        with Session(engine) as session:
            session.add(
                AuditCosignature(
                    tree_size=int(size),
                    root_hash=base64.b64decode(root),
                    witness=WITNESS,
                    key_id=cosignature.key_id.hex(),
                    timestamp=cosignature.timestamp,
                    line=cosignature.line(),
                )
            )
            session.commit()
        response = client.get(f"/v1/models/{model_id}/evidence", headers=people["carol"])
        assert response.status_code == 200, response.text
        yield SimpleNamespace(
            client=client,
            people=people,
            token=token,
            engine=engine,
            model_id=model_id,
            files=files,
            response=response,
            witnessed_size=int(size),
            settings=settings,
            bundle=response.content,
        )


def members_of(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return {info.filename: archive.read(info) for info in archive.infolist()}


def zip_of(members: dict[str, bytes], *, rehash: bool = True) -> bytes:
    """The members as a zip; with ``rehash``, MANIFEST.json relisted as a forger would."""
    if rehash:
        manifest = json.loads(members["MANIFEST.json"])
        manifest["files"] = {
            name: hashlib.sha256(data).hexdigest()
            for name, data in members.items()
            if name != "MANIFEST.json"
        }
        members = {**members, "MANIFEST.json": json.dumps(manifest).encode()}
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return out.getvalue()


def run_cli(path: Path, *args: str) -> tuple[int, str]:
    from gateway.cli import app

    result = CliRunner().invoke(app, ["evidence", "verify", str(path), *args])
    return result.exit_code, result.output


# The script run isolated (-I: no user site, no PYTHONPATH, no script or cwd directory on
# sys.path) and with the checkout itself (an editable install's .pth) off sys.path too;
# the project's packages must never have been imported when it ends.
ISOLATED = """
import runpy, sys
root, script = sys.argv[1], sys.argv[2]
sys.path = [p for p in sys.path if p not in (root, "")]
sys.argv = sys.argv[2:]
try:
    runpy.run_path(script, run_name="__main__")
finally:
    ours = {"audit", "gateway", "policies", "ingest", "trainer", "tests"}
    leaked = sorted(m for m in sys.modules if m.split(".")[0] in ours)
    if leaked:
        print("FAILED: imported project code", leaked)
        sys.exit(3)
"""


def run_script(path: Path, *args: str) -> tuple[int, str]:
    """The standalone verifier, with nothing of the project importable."""
    done = subprocess.run(  # noqa: S603 (our own interpreter and script)
        [sys.executable, "-I", "-c", ISOLATED, str(ROOT), str(SCRIPT), str(path), *args],
        capture_output=True,
        text=True,
        cwd=path.parent,
        timeout=60,
    )
    return done.returncode, done.stdout + done.stderr


VERIFIERS = {"cli": run_cli, "script": run_script}


# --- the route ----------------------------------------------------------------------------


class TestRoute:
    def test_it_streams_a_zip_whose_sha256_is_audited(self, built):
        response = built.response
        assert response.headers["content-type"] == "application/zip"
        digest = hashlib.sha256(built.bundle).hexdigest()
        assert response.headers["x-evidence-sha256"] == digest
        page = built.client.get(
            "/v1/audit/events",
            params={"action": "model.evidence_exported"},
            headers=built.people["carol"],
        )
        assert page.status_code == 200, page.text
        [event] = page.json()["data"]
        assert event["details"]["sha256"] == digest
        assert event["details"]["bytes"] == len(built.bundle)
        assert event["resource"] == f"model:{built.model_id}" and event["actor"] == "carol"

    def test_it_holds_every_part(self, built):
        members = members_of(built.bundle)
        assert {
            "MANIFEST.json",
            "dossier.json",
            "dossier.md",
            "training_content_summary.json",
            "training_content_summary.md",
            "lineage.json",
            "events.jsonl",
            "checkpoint.txt",
            "keys/log.vkey",
            "keys/log.pem",
            "VERIFY.md",
        } <= set(members)
        lines = [json.loads(line) for line in members["events.jsonl"].splitlines()]
        actions = {line["event"]["action"] for line in lines}
        assert {"data_source.approved", "file.uploaded", "model.registered", "model.promoted"} <= (
            actions
        )
        size = int(members["checkpoint.txt"].decode().split("\n")[1])
        assert all(line["proof"]["tree_size"] == size for line in lines)
        assert members["keys/log.vkey"].decode().startswith("tunegate.example.com/audit/global+")

    def test_another_tenant_gets_404(self, built):
        outsider = built.token("otto", "compliance-officer", tenant="acme")
        response = built.client.get(f"/v1/models/{built.model_id}/evidence", headers=outsider)
        assert response.status_code == 404, response.text

    def test_an_engineer_may_not_export_it(self, built):
        response = built.client.get(
            f"/v1/models/{built.model_id}/evidence", headers=built.people["bob"]
        )
        assert response.status_code == 403, response.text

    def test_an_unknown_model_is_404(self, built):
        response = built.client.get("/v1/models/ft-nope/evidence", headers=built.people["carol"])
        assert response.status_code == 404, response.text


# --- the verifiers ------------------------------------------------------------------------


@pytest.mark.parametrize("verifier", sorted(VERIFIERS))
def test_a_whole_bundle_verifies(built, tmp_path, verifier):
    path = tmp_path / "bundle.zip"
    path.write_bytes(built.bundle)
    code, output = VERIFIERS[verifier](path)
    assert code == 0, output
    assert "OK:" in output and "events, each proven" in output
    assert "adapter sha256" in output and output.count("(file.uploaded)") == 2


def test_the_script_is_short_and_imports_only_the_stdlib_and_cryptography():
    source = SCRIPT.read_text()
    assert len(source.splitlines()) < 300
    imported = {
        line.split()[1].split(".")[0]
        for line in source.splitlines()
        if line.startswith(("import ", "from "))
    }
    assert imported - set(sys.stdlib_module_names) == {"cryptography"}


def _events(members):
    return [json.loads(line) for line in members["events.jsonl"].splitlines()]


def _with_events(members, lines):
    text = "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines)
    return {**members, "events.jsonl": text.encode()}


def event_details(members):
    lines = _events(members)
    lines[2]["event"]["details"]["forged"] = "yes"
    return _with_events(members, lines)


def proof_hash(members):
    lines = _events(members)
    first = base64.b64decode(lines[1]["proof"]["hashes"][0])
    lines[1]["proof"]["hashes"][0] = base64.b64encode(bytes([first[0] ^ 1]) + first[1:]).decode()
    return _with_events(members, lines)


def dropped_event(members):
    return _with_events(members, _events(members)[1:])


def checkpoint_signature(members):
    text, _, sig = members["checkpoint.txt"].decode().rpartition("\n\n")
    name, _, blob = sig.strip().split("\n")[0].removeprefix("\u2014 ").partition(" ")
    raw = bytearray(base64.b64decode(blob))
    raw[-1] ^= 1
    line = f"\u2014 {name} {base64.b64encode(bytes(raw)).decode()}\n"
    return {**members, "checkpoint.txt": f"{text}\n\n{line}".encode()}


def checkpoint_root(members):
    origin, size, _, *rest = members["checkpoint.txt"].decode().split("\n")
    root = base64.b64encode(hashlib.sha256(b"another tree").digest()).decode()
    return {**members, "checkpoint.txt": "\n".join([origin, size, root, *rest]).encode()}


def _json_edit(name, edit):
    def mutate(members):
        doc = json.loads(members[name])
        edit(doc)
        return {**members, name: json.dumps(doc).encode()}

    return mutate


def _set_adapter(doc):
    doc["general"]["adapter_sha256"] = "0" * 64


def _set_file_sha(doc):
    doc["data"]["files"][0]["sha256"] = "1" * 64


def _set_purpose(doc):
    doc["intended_purpose"]["job_purpose"] = "something else"


def _set_model(doc):
    doc["model_id"] = "ft-someone-else"


def manifest_entry(members):
    manifest = json.loads(members["MANIFEST.json"])
    manifest["files"]["lineage.json"] = "2" * 64
    return {**members, "MANIFEST.json": json.dumps(manifest).encode()}


def missing_file(members):
    return {name: data for name, data in members.items() if name != "dossier.md"}


def extra_file(members):
    return {**members, "evil.txt": b"not listed"}


# (mutation, rewrite the manifest as a forger would, what the verifier must say)
CORRUPTIONS = {
    "event details": (
        event_details,
        True,
        "events.jsonl line 3: inclusion proof does not lead to the checkpoint root",
    ),
    "proof hash": (
        proof_hash,
        True,
        "events.jsonl line 2: inclusion proof does not lead to the checkpoint root",
    ),
    "dropped event": (
        dropped_event,
        True,
        "dossier.json: its audit events are not those of events.jsonl",
    ),
    "checkpoint signature": (
        checkpoint_signature,
        True,
        "checkpoint.txt: signature by tunegate.example.com/audit/global does not verify",
    ),
    "checkpoint root": (
        checkpoint_root,
        True,
        "checkpoint.txt: signature by tunegate.example.com/audit/global does not verify",
    ),
    "dossier": (
        _json_edit("dossier.json", _set_purpose),
        False,
        "dossier.json: sha256 differs from MANIFEST.json",
    ),
    "dossier adapter": (
        _json_edit("dossier.json", _set_adapter),
        True,
        "dossier.json: adapter_sha256 differs from the model.registered event",
    ),
    "dossier data file": (
        _json_edit("dossier.json", _set_file_sha),
        True,
        "sha256 differs from its file.uploaded event",
    ),
    "lineage model": (
        _json_edit("lineage.json", _set_model),
        True,
        "lineage.json: model_id 'ft-someone-else' is not the bundle's",
    ),
    "manifest entry": (manifest_entry, False, "lineage.json: sha256 differs from MANIFEST.json"),
    "missing file": (
        missing_file,
        False,
        "dossier.md: listed in MANIFEST.json but missing from the bundle",
    ),
    "unlisted file": (extra_file, False, "evil.txt: not listed in MANIFEST.json"),
}


@pytest.mark.parametrize("verifier", sorted(VERIFIERS))
@pytest.mark.parametrize("part", list(CORRUPTIONS))
def test_each_corrupted_part_is_named(built, tmp_path, part, verifier):
    mutate, rehash, expected = CORRUPTIONS[part]
    path = tmp_path / "bundle.zip"
    path.write_bytes(zip_of(mutate(members_of(built.bundle)), rehash=rehash))
    code, output = VERIFIERS[verifier](path)
    assert code == 1, output
    [failure] = [line for line in output.splitlines() if line.startswith("FAILED: ")]
    assert expected in failure, output


@pytest.mark.parametrize("verifier", sorted(VERIFIERS))
def test_a_key_the_user_trusts_decides(built, tmp_path, verifier):
    path = tmp_path / "bundle.zip"
    path.write_bytes(built.bundle)
    vkey = members_of(built.bundle)["keys/log.vkey"].decode().strip()
    assert VERIFIERS[verifier](path, "--key", vkey)[0] == 0
    from audit.note import ed25519_vkey

    other = ed25519_vkey(
        "tunegate.example.com/audit/global", Ed25519PrivateKey.generate().public_key()
    )
    code, output = VERIFIERS[verifier](path, "--key", other)
    assert code == 1 and "FAILED: checkpoint.txt: no signature by" in output, output


def test_the_proofs_lead_to_the_witnessed_checkpoint(built):
    """The export's own checkpoint is too new to be witnessed: the bundle proves the
    events against the newest cosigned one that holds them all, with its cosignature."""
    note = members_of(built.bundle)["checkpoint.txt"].decode()
    assert int(note.split("\n")[1]) == built.witnessed_size
    assert f"\u2014 {WITNESS} " in note


@pytest.mark.parametrize("verifier", sorted(VERIFIERS))
def test_witness_quorum(built, tmp_path, verifier):
    path = tmp_path / "bundle.zip"
    path.write_bytes(built.bundle)
    code, output = VERIFIERS[verifier](path, "--witness", WITNESS_VKEY, "--quorum", "1")
    assert code == 0 and "cosigned by 1 of 1 witnesses" in output, output
    other = cosigner_vkey("witness.example.org/w2", Ed25519PrivateKey.generate().public_key())
    code, output = VERIFIERS[verifier](
        path, "--witness", WITNESS_VKEY, "--witness", other, "--quorum", "2"
    )
    assert code == 1 and "1 of the 2 witness cosignatures needed" in output, output
    # a line under the witness's name, by another key, is no cosignature of it
    members = members_of(built.bundle)
    note = members["checkpoint.txt"].decode()
    text = note[: note.rfind("\n\n") + 1]
    kept = [line for line in note.splitlines(keepends=True) if WITNESS not in line]
    forged = cosign(text, name=WITNESS, private_key=Ed25519PrivateKey.generate(), timestamp=1)
    fake = tmp_path / "fake.zip"
    fake.write_bytes(
        zip_of({**members, "checkpoint.txt": ("".join(kept) + forged.line()).encode()})
    )
    code, output = VERIFIERS[verifier](fake, "--witness", WITNESS_VKEY, "--quorum", "1")
    assert code == 1 and "0 of the 1 witness cosignatures needed" in output, output


def test_the_cli_downloads_it_checked_and_verifies_it(built, tmp_path, monkeypatch):
    from tests.gateway.cli.cli_support import serving

    token = built.people["carol"]["Authorization"].split()[1]
    monkeypatch.setenv("TUNEGATE_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("TUNEGATE_TOKEN", token)
    out = tmp_path / "downloaded.zip"
    with serving(built.settings) as url:
        monkeypatch.setenv("TUNEGATE_URL", url)
        from gateway.cli import app

        result = CliRunner().invoke(app, ["evidence", "download", built.model_id, "-o", str(out)])
    assert result.exit_code == 0, result.output
    # The first export's own events (model.dossier_exported, ...) are about the model and
    # newer than the witnessed checkpoint: this bundle is proven against the newest one.
    code, output = run_cli(out)
    assert code == 0, output
    assert "cosigned by 0 of 0 witnesses" in output
