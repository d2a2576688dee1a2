"""Check a tunegate evidence bundle offline; the reference for outside auditors. Python 3.11
and ``cryptography`` only, nothing of tunegate. Checks: the C2SP checkpoint is signed by the
log's key (--key, else keys/log.vkey) and K witnesses cosigned it; each event's leaf,
SHA-256(0x00 || RFC 8785 JSON), leads through its RFC 6962 proof to the checkpoint's root;
the dossier and lineage cite what the events record; every member matches MANIFEST.json.
    python audit/verify_bundle.py BUNDLE.zip [--key VKEY] [--witness VKEY ...] [--quorum K]
Exit 0 when all hold, else 1, naming the first part that fails."""

import argparse
import base64
import binascii
import hashlib
import json
import struct
import sys
import zipfile
from json.encoder import encode_basestring
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

FORMAT = "tunegate-evidence/v1"
MANIFEST, CHECKPOINT, EVENTS = "MANIFEST.json", "checkpoint.txt", "events.jsonl"
LOG_VKEY, WITNESS_VKEYS = "keys/log.vkey", "keys/witnesses.vkey"
REQUIRED = ("dossier.json", "lineage.json", EVENTS, CHECKPOINT)


class Bad(Exception):
    """A check failed; the message names the part."""


sha256 = lambda data: hashlib.sha256(data).digest()  # noqa: E731
b64 = lambda text: base64.b64decode(text, validate=True)  # noqa: E731  (strict base64)


def verify(key: Ed25519PublicKey, signature: bytes, message: bytes) -> bool:
    try:
        return key.verify(signature, message) is None
    except InvalidSignature:
        return False


def canonical(value: object) -> str:
    """RFC 8785 for what audit events hold: sorted keys (UTF-16), no floats, no spaces."""
    if value is None or value is True or value is False:
        return {None: "null", True: "true", False: "false"}[value]
    if isinstance(value, str):
        return encode_basestring(value)
    if isinstance(value, int) and abs(value) <= 2**53 - 1:
        return int.__repr__(value)
    if isinstance(value, list):
        return "[" + ",".join(canonical(item) for item in value) + "]"
    if isinstance(value, dict):
        keys = sorted(value, key=lambda key: key.encode("utf-16-be"))
        return "{" + ",".join(f"{encode_basestring(k)}:{canonical(value[k])}" for k in keys) + "}"
    raise ValueError(f"{value!r:.40}: no canonical form (floats, big integers are refused)")


def root_from_inclusion(index: int, size: int, leaf: bytes, path: list[bytes]) -> bytes:
    """RFC 9162 §2.1.3.2: the root that ``path`` leads to from ``leaf`` at ``index``."""
    if not 0 <= index < size:
        raise ValueError(f"index {index} is not in a tree of {size}")
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if sn == 0:
            raise ValueError("proof is too long")
        if fn & 1 or fn == sn:
            r = sha256(b"\x01" + p + r)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = sha256(b"\x01" + r + p)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise ValueError("proof is too short")
    return r


def parse_vkey(vkey: str, key_type: int) -> tuple[str, bytes, Ed25519PublicKey]:
    """name+hex(key ID)+base64(type || key): (name, key ID, key); the key ID is checked."""
    try:
        name, hex_id, material = vkey.strip().split("+", 2)
        raw, key_id = b64(material), bytes.fromhex(hex_id)
    except (ValueError, binascii.Error):
        raise Bad(f"key {vkey.strip()[:60]!r}: not a vkey name+id+base64") from None
    if len(raw) != 33 or raw[0] != key_type:
        raise Bad(f"key {name}: not an Ed25519 key of type {key_type:#04x}")
    if key_id != sha256(name.encode() + b"\n" + raw[:1] + raw[1:])[:4]:
        raise Bad(f"key {name}: key ID does not match its name and key")
    return name, key_id, Ed25519PublicKey.from_public_bytes(raw[1:])


def split_note(note: str) -> tuple[str, list[tuple[str, bytes]]]:
    split = note.rfind("\n\n")
    if split < 0 or not note.endswith("\n"):
        raise Bad(f"{CHECKPOINT}: not a signed note")
    lines = []
    for line in note[split + 2 : -1].split("\n"):
        name, _, blob = line.removeprefix("\u2014 ").partition(" ")
        try:
            if not line.startswith("\u2014 ") or not name:
                raise ValueError
            lines.append((name, b64(blob)))
        except (ValueError, binascii.Error):
            raise Bad(f"{CHECKPOINT}: malformed signature line {line[:60]!r}") from None
    return note[: split + 1], lines


def check_checkpoint(note: str, vkey: str) -> tuple[str, int, bytes, str]:
    """(origin, size, root, text) once the log key verified the note."""
    name, key_id, key = parse_vkey(vkey, 0x01)
    text, signatures = split_note(note)
    mine = [blob for signer, blob in signatures if signer == name and blob[:4] == key_id]
    if not mine:
        raise Bad(f"{CHECKPOINT}: no signature by {name}+{key_id.hex()}")
    if not all(verify(key, blob[4:], text.encode()) for blob in mine):
        raise Bad(f"{CHECKPOINT}: signature by {name} does not verify")
    lines = text[:-1].split("\n")
    try:
        origin, size, root = lines[0], int(lines[1]), b64(lines[2])
        if len(root) != 32 or str(size) != lines[1]:
            raise ValueError
    except (IndexError, ValueError, binascii.Error):
        raise Bad(f"{CHECKPOINT}: not a tlog checkpoint (origin, size, root)") from None
    return origin, size, root, text


def cosigned_by(text: str, note: str, vkeys: list[str]) -> list[str]:
    _, signatures = split_note(note)
    found = []
    for vkey in vkeys:
        name, key_id, key = parse_vkey(vkey, 0x04)
        for signer, blob in signatures:
            if signer == name and blob[:4] == key_id and len(blob) == 76:
                message = b"cosignature/v1\ntime %d\n" % struct.unpack(">Q", blob[4:12])[0]
                if verify(key, blob[12:], message + text.encode()):
                    found.append(name)
                    break
    return found


def read_json(members: dict[str, bytes], name: str) -> dict:
    try:
        return dict(json.loads(members[name]))
    except (KeyError, ValueError, TypeError):
        raise Bad(f"{name}: missing or not a JSON object") from None


def check_manifest_lists(members: dict[str, bytes]) -> dict:
    manifest = read_json(members, MANIFEST)
    files = manifest.get("files")
    if manifest.get("format") != FORMAT or not isinstance(files, dict):
        raise Bad(f"{MANIFEST}: not a {FORMAT} manifest")
    for name in sorted(set(files) | set(REQUIRED)):
        if name not in members:
            raise Bad(f"{name}: listed in {MANIFEST} but missing from the bundle")
    for name in sorted(set(members) - set(files) - {MANIFEST}):
        raise Bad(f"{name}: not listed in {MANIFEST}")
    return manifest


def read_events(members: dict[str, bytes]) -> list[tuple[int, dict, dict]]:
    """(line number, event, proof) of each line of events.jsonl."""
    out = []
    for number, line in enumerate(members[EVENTS].decode("utf-8").splitlines(), start=1):
        try:
            entry = json.loads(line)
            event, proof = dict(entry["event"]), dict(entry["proof"])
        except (ValueError, KeyError, TypeError):
            raise Bad(f"{EVENTS} line {number}: not an event with its proof") from None
        out.append((number, event, proof))
    return out


def check_event(number: int, event: dict, proof: dict, size: int, root: bytes) -> None:
    where = f"{EVENTS} line {number}"
    try:
        leaf = sha256(b"\x00" + canonical(event).encode("utf-8"))
        index, tree_size = proof["index"], proof["tree_size"]
        if event.get("seq") != index + 1 or tree_size != size:
            raise ValueError(f"seq {event.get('seq')}, index {index}, tree of {tree_size}")
        found = root_from_inclusion(index, size, leaf, [b64(h) for h in proof["hashes"]])
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise Bad(f"{where}: unreadable or malformed event or proof ({exc})") from None
    if found != root:
        raise Bad(f"{where}: inclusion proof does not lead to the checkpoint root")


def check_facts(members: dict[str, bytes], manifest: dict, events: list, size: int, root: bytes):
    """The dossier and lineage say what the proven events record; a list of what was."""
    dossier, lineage = read_json(members, "dossier.json"), read_json(members, "lineage.json")
    model = manifest.get("model_id")
    for name, doc in (("dossier.json", dossier), ("lineage.json", lineage)):
        if doc.get("model_id") != model:
            raise Bad(f"{name}: model_id {doc.get('model_id')!r} is not the bundle's {model!r}")
    summary = json.loads(members.get("training_content_summary.json", b'{"general": {}}'))
    if summary["general"].get("model_id", model) != model:
        raise Bad("training_content_summary.json: model_id is not the bundle's")
    audit = dossier.get("audit") or {}
    cp = audit.get("checkpoint") or {"tree_size": -1}  # the dossier's: the same or newer
    if cp["tree_size"] < size or cp["tree_size"] == size and cp["root_hash"] != root.hex():
        raise Bad("dossier.json: its audit checkpoint is older than checkpoint.txt's or differs")
    by_seq = {event["seq"]: (number, event) for number, event, _ in events}
    quoted = [{k: v for k, v in e["event"].items() if k not in ("hash", "prev_hash")}
              for e in audit.get("events") or []]  # fmt: skip
    if sorted(map(canonical, quoted)) != sorted(canonical(e) for _, e in by_seq.values()):
        raise Bad(f"dossier.json: its audit events are not those of {EVENTS}")
    adapter, checked = (dossier.get("general") or {}).get("adapter_sha256"), []
    uploads: dict[object, list[tuple[int, dict]]] = {}
    for number, event in sorted(by_seq.values()):
        details = event.get("details") or {}
        if event.get("action") == "file.uploaded":
            uploads.setdefault(details.get("file_id"), []).append((number, details))
        if event.get("action") == "model.registered" and details.get("model_id") == model:
            if details.get("adapter_sha256") != adapter:
                raise Bad(
                    f"dossier.json: adapter_sha256 differs from the model.registered event "
                    f"({EVENTS} line {number})"
                )
            checked.append(f"adapter sha256 {str(adapter)[:12]}… (model.registered)")
    for file in (dossier.get("data") or {}).get("files") or []:
        file_id = file.get("file_id")
        if not uploads.get(file_id):
            raise Bad(f"dossier.json: data file {file_id} has no file.uploaded event")
        if all(d.get("sha256") != file.get("sha256") for _, d in uploads[file_id]):
            number = uploads[file_id][0][0]
            raise Bad(
                f"dossier.json: data file {file_id} sha256 differs from its file.uploaded "
                f"event ({EVENTS} line {number})"
            )
        checked.append(f"data file {file_id} sha256 (file.uploaded)")
    chain = lineage.get("chain") or [{}]
    if chain[0].get("adapter_sha256") != adapter:
        raise Bad("lineage.json: adapter_sha256 differs from dossier.json")
    dossier_files = {f.get("file_id"): f.get("sha256") for f in dossier["data"]["files"]}
    for file in chain[0].get("data_files") or []:
        if dossier_files.get(file.get("file_id"), file.get("sha256")) != file.get("sha256"):
            raise Bad(f"lineage.json: data file {file.get('file_id')} sha256 differs")
    return checked


def verify_bundle(path: str, *, key: str | None, witnesses: list[str], quorum: int) -> list[str]:
    """What was checked, line by line; raises Bad naming the first part that fails."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = {info.filename: archive.read(info) for info in archive.infolist()}
    except (OSError, zipfile.BadZipFile) as exc:
        raise Bad(f"{path}: not a readable zip ({exc})") from None
    manifest = check_manifest_lists(members)
    if key is None and LOG_VKEY not in members:
        raise Bad(f"{LOG_VKEY}: missing (or pass --key)")
    key, whose = (key, "") if key else (members[LOG_VKEY].decode().strip(), " (bundled key)")
    note = members[CHECKPOINT].decode("utf-8", "replace")
    origin, size, root, text = check_checkpoint(note, key)
    done = [f"{CHECKPOINT}: {origin}, {size} events, signed by {key.split('+')[0]}{whose}"]
    if not witnesses and WITNESS_VKEYS in members:
        witnesses = members[WITNESS_VKEYS].decode().split()
    cosigners = cosigned_by(text, note, witnesses)
    if len(cosigners) < quorum:
        raise Bad(f"{CHECKPOINT}: {len(cosigners)} of the {quorum} witness cosignatures needed")
    done.append(f"{CHECKPOINT}: cosigned by {len(cosigners)} of {len(witnesses)} witnesses")
    events = read_events(members)
    for number, event, proof in events:
        check_event(number, event, proof, size, root)
    done.append(f"{EVENTS}: {len(events)} events, each proven in the checkpoint's tree")
    try:
        done += check_facts(members, manifest, events, size, root)
    except (KeyError, TypeError, AttributeError, IndexError, ValueError) as exc:
        raise Bad(f"dossier.json or lineage.json: not the shape expected ({exc!r})") from None
    for name, digest in sorted(manifest["files"].items()):
        if hashlib.sha256(members[name]).hexdigest() != digest:
            raise Bad(f"{name}: sha256 differs from {MANIFEST}")
    done.append(f"{MANIFEST}: {len(manifest['files'])} files match")
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Check a tunegate evidence bundle offline.")
    parser.add_argument("bundle")
    parser.add_argument("--key", help="the log's vkey (or a file holding it); default: bundled")
    parser.add_argument("--witness", action="append", default=[], help="a witness vkey")
    parser.add_argument("--quorum", type=int, default=0, help="witness cosignatures required")
    args = parser.parse_args(argv)
    read = lambda v: v if "+" in v else Path(v).read_text(encoding="utf-8").strip()  # noqa: E731
    key, witnesses = args.key and read(args.key), [read(w) for w in args.witness]
    try:
        done = verify_bundle(args.bundle, key=key, witnesses=witnesses, quorum=args.quorum)
    except (Bad, OSError) as exc:
        print(f"FAILED: {exc}")
        return 1
    for line in done:
        print(f"ok  {line}")
    print(f"OK: {args.bundle} verifies")
    return 0


if __name__ == "__main__":
    sys.exit(main())
