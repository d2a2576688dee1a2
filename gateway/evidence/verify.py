"""The gateway's own check of an evidence bundle (`tunegate evidence verify`), with the
project's audit library: audit.note for the signed checkpoint, audit.witness for the
K-of-N cosignatures, audit.encoding + audit.hashing for each event's leaf and
audit.merkle for its inclusion proof. The manifest and the dossier/lineage facts are read
with the standalone reference (audit.verify_bundle), whose crypto this does not use:
two implementations of the hashes and signatures, one of the bookkeeping. Offline: no
database, no gateway."""

from __future__ import annotations

import base64
import binascii
import hashlib
import zipfile
from dataclasses import dataclass, field

from audit import verify_bundle as reference
from audit.cosignature import CosignatureError, parse_cosigner_vkey
from audit.encoding import CanonicalEncodingError, canonical_json
from audit.hashing import leaf_hash
from audit.merkle import InclusionProofError, verify_inclusion
from audit.note import NoteError, TlogCheckpoint, open_note, parse_vkey
from audit.witness import QuorumError, require_cosignatures
from gateway.evidence import bundle

Bad = reference.Bad


@dataclass
class BundleVerdict:
    ok: bool
    checked: list[str] = field(default_factory=list)
    error: str | None = None


def _checkpoint(note: str, vkey: str) -> TlogCheckpoint:
    try:
        verifier = parse_vkey(vkey)
    except NoteError as exc:
        raise Bad(f"key: {exc}") from None
    try:
        text, _ = open_note(note, [verifier])
    except NoteError as exc:
        if exc.code == "unverified":
            raise Bad(f"{bundle.CHECKPOINT}: no signature by {verifier.name}") from None
        if exc.code == "signature":
            raise Bad(
                f"{bundle.CHECKPOINT}: signature by {verifier.name} does not verify"
            ) from None
        raise Bad(f"{bundle.CHECKPOINT}: {exc}") from None
    try:
        return TlogCheckpoint.parse(text)
    except NoteError as exc:
        raise Bad(f"{bundle.CHECKPOINT}: {exc}") from None


def _event(number: int, event: dict, proof: dict, checkpoint: TlogCheckpoint) -> None:
    where = f"{bundle.EVENTS} line {number}"
    try:
        leaf = leaf_hash(canonical_json(event))
        path = [base64.b64decode(h, validate=True) for h in proof["hashes"]]
        index, size = proof["index"], proof["tree_size"]
    except (CanonicalEncodingError, KeyError, TypeError, ValueError, binascii.Error) as exc:
        raise Bad(f"{where}: unreadable event or proof ({exc})") from None
    if event.get("seq") != index + 1:
        raise Bad(f"{where}: event seq {event.get('seq')} is not proof index {index} + 1")
    if size != checkpoint.size:
        raise Bad(f"{where}: proof is for a tree of {size}, the checkpoint's has {checkpoint.size}")
    try:
        verify_inclusion(leaf, index, size, path, checkpoint.root)
    except InclusionProofError as exc:
        if exc.what == "root hash":
            raise Bad(f"{where}: inclusion proof does not lead to the checkpoint root") from None
        raise Bad(f"{where}: inclusion proof is malformed ({exc})") from None


def verify(
    path: str, *, key: str | None = None, witnesses: list[str] | None = None, quorum: int = 0
) -> BundleVerdict:
    """Every check of the bundle at ``path``; the verdict names the first that fails."""
    verdict = BundleVerdict(ok=False)
    try:
        try:
            with zipfile.ZipFile(path) as archive:
                members = {info.filename: archive.read(info) for info in archive.infolist()}
        except (OSError, zipfile.BadZipFile) as exc:
            raise Bad(f"{path}: not a readable zip ({exc})") from None
        manifest = reference.check_manifest_lists(members)
        whose = ""
        if key is None:
            if bundle.LOG_VKEY not in members:
                raise Bad(f"{bundle.LOG_VKEY}: missing (or pass --key)")
            key, whose = members[bundle.LOG_VKEY].decode().strip(), " (bundled key)"
        note = members[bundle.CHECKPOINT].decode("utf-8", "replace")
        checkpoint = _checkpoint(note, key)
        verdict.checked.append(
            f"{bundle.CHECKPOINT}: {checkpoint.origin}, {checkpoint.size} events, "
            f"signed by {key.split('+')[0]}{whose}"
        )
        vkeys = list(witnesses or [])
        if not vkeys and bundle.WITNESS_VKEYS in members:
            vkeys = members[bundle.WITNESS_VKEYS].decode().split()
        try:
            keys = [parse_cosigner_vkey(v) for v in vkeys]
            found = require_cosignatures(note, keys, min(quorum, len(keys)))
            if len(found) < quorum:
                raise QuorumError(quorum, len(found), "")
        except CosignatureError as exc:
            raise Bad(f"witness key: {exc}") from None
        except QuorumError as exc:
            raise Bad(
                f"{bundle.CHECKPOINT}: {exc.found} of the {quorum} witness cosignatures needed"
            ) from None
        verdict.checked.append(
            f"{bundle.CHECKPOINT}: cosigned by {len(found)} of {len(keys)} witnesses"
        )
        events = reference.read_events(members)
        for number, event, proof in events:
            _event(number, event, proof, checkpoint)
        verdict.checked.append(
            f"{bundle.EVENTS}: {len(events)} events, each proven in the checkpoint's tree"
        )
        verdict.checked += reference.check_facts(
            members, manifest, events, checkpoint.size, checkpoint.root
        )
        for name, digest in sorted(manifest["files"].items()):
            if hashlib.sha256(members[name]).hexdigest() != digest:
                raise Bad(f"{name}: sha256 differs from {bundle.MANIFEST}")
        verdict.checked.append(f"{bundle.MANIFEST}: {len(manifest['files'])} files match")
    except Bad as exc:
        verdict.error = str(exc)
        return verdict
    verdict.ok = True
    return verdict
