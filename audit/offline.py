"""Offline check of an inclusion proof against a signed checkpoint, with only the public
key: what ``tunegate audit verify-proof`` runs. No database, no network.

Also: C2SP tlog-proof bundles (``verify_tlog_proof``; ``GET /v1/audit/events/{seq}/proof
?format=tlog-proof``) and the consistency of a newer checkpoint with an older one
(``verify_checkpoint_consistency``; ``GET /v1/audit/consistency``), checked with a
signed-note verifier key or the PEM.

Inputs are the documents the gateway serves: the proof from
``GET /v1/audit/events/{seq}/proof?tree_size=N`` (audit.query.inclusion_proof), the
checkpoint from ``GET /v1/audit/checkpoints/latest`` (Checkpoint.to_json) and the PEM from
``GET /v1/audit/public-key``. Each may be a dict, JSON text or JSON bytes.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass

from audit.checkpoints import ORIGIN, CheckpointError, load_public_key, verify_checkpoint
from audit.hashing import leaf_hash
from audit.merkle import (
    ConsistencyProofError,
    InclusionProofError,
    verify_consistency,
    verify_inclusion,
)
from audit.note import NoteError, TlogCheckpoint, Verifier, open_checkpoint, parse_note, parse_vkey
from audit.query import PROOF_FORMAT


@dataclass(frozen=True)
class ProofVerdict:
    ok: bool
    code: str  # "ok", or what failed: malformed, key_id, signature, tree_size, leaf, inclusion
    message: str


class _Malformed(ValueError):
    pass


def _document(value: object, what: str) -> dict:
    if isinstance(value, bytes | str):
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise _Malformed(f"{what} is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise _Malformed(f"{what} must be a JSON object")
    return value


def _hex32(value: object, what: str) -> bytes:
    try:
        raw = bytes.fromhex(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise _Malformed(f"{what} is not hex") from None
    if len(raw) != 32:
        raise _Malformed(f"{what} must be 32 bytes, is {len(raw)}")
    return raw


def verify_proof(
    proof: dict | str | bytes, checkpoint: dict | str | bytes, public_key_pem: bytes | str
) -> ProofVerdict:
    """Say whether ``proof`` shows its event inside the tree that ``checkpoint`` signs,
    and ``public_key_pem`` made that signature; if not, say why."""
    try:
        signed = verify_checkpoint(_document(checkpoint, "checkpoint"), public_key_pem)
        doc = _document(proof, "proof")
        if doc.get("format", PROOF_FORMAT) != PROOF_FORMAT:
            raise _Malformed(f"unknown proof format {doc.get('format')!r}")
        seq, size = doc.get("seq"), doc.get("tree_size")
        if type(seq) is not int or type(size) is not int or seq < 1:
            raise _Malformed("seq and tree_size must be integers, seq >= 1")
        hashes = doc.get("hashes")
        if not isinstance(hashes, list):
            raise _Malformed("hashes must be a list of hex strings")
        path = [_hex32(h, f"hashes[{i}]") for i, h in enumerate(hashes)]
        if size != signed.tree_size:
            return ProofVerdict(
                False,
                "tree_size",
                f"proof is for a tree of {size} events, the checkpoint signs {signed.tree_size}: "
                f"fetch the proof with tree_size={signed.tree_size}",
            )
        if "body" in doc:
            body = doc["body"]
            if not isinstance(body, str):
                raise _Malformed("body must be a string")
            leaf = leaf_hash(body.encode("utf-8"))
            claimed = json.loads(body).get("seq") if body.startswith("{") else None
            if claimed != seq:
                return ProofVerdict(
                    False, "leaf", f"body records seq {claimed!r}, proof says {seq}"
                )
            if "leaf_hash" in doc and _hex32(doc["leaf_hash"], "leaf_hash") != leaf:
                return ProofVerdict(
                    False, "leaf", f"leaf_hash: expected {leaf.hex()}, found {doc['leaf_hash']}"
                )
        else:
            leaf = _hex32(doc.get("leaf_hash"), "leaf_hash")
        verify_inclusion(leaf, seq - 1, size, path, signed.root_hash)
    except CheckpointError as exc:
        return ProofVerdict(False, exc.code, f"checkpoint: {exc}")
    except InclusionProofError as exc:
        return ProofVerdict(False, "inclusion", str(exc))
    except (_Malformed, ValueError) as exc:
        return ProofVerdict(False, "malformed", str(exc))
    return ProofVerdict(
        True,
        "ok",
        f"event {seq} is in the tree of {size} events signed at {signed.ts} by key {signed.key_id}",
    )


# --- C2SP: tlog-proof bundles and consistency between checkpoints (issue 16 §1) ----------

TLOG_PROOF_HEADER = "c2sp.org/tlog-proof@v1"
CONSISTENCY_FORMAT = "tunegate-consistency-proof/v1"


@dataclass(frozen=True)
class TlogProof:
    """A c2sp.org/tlog-proof: the leaf index, its inclusion hashes and the checkpoint note
    verbatim. ``extra`` (unauthenticated, per the spec) carries the event body here, so
    the leaf hash ``sha256(0x00 || body)`` can be recomputed."""

    index: int
    hashes: tuple[bytes, ...]
    checkpoint: str
    extra: bytes | None = None

    def text(self) -> str:
        lines = [TLOG_PROOF_HEADER]
        if self.extra is not None:
            lines.append("extra " + base64.b64encode(self.extra).decode("ascii"))
        lines.append(f"index {self.index}")
        lines.extend(base64.b64encode(h).decode("ascii") for h in self.hashes)
        return "\n".join(lines) + "\n\n" + self.checkpoint

    @classmethod
    def parse(cls, data: str | bytes) -> TlogProof:
        """Raises NoteError(code="malformed") when it is not a tlog-proof."""
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        head, sep, checkpoint = text.partition("\n\n")
        lines = head.split("\n")
        if not sep or lines[0] != TLOG_PROOF_HEADER:
            raise NoteError("malformed", "tlog-proof must start with", TLOG_PROOF_HEADER, lines[0])
        rest = lines[1:]
        extra = None
        if rest and rest[0].startswith("extra "):
            extra = _b64(rest.pop(0)[6:], "extra data")
        if not rest or not rest[0].startswith("index "):
            raise NoteError("malformed", "tlog-proof needs an 'index N' line")
        digits = rest.pop(0)[6:]
        if not _DECIMAL.match(digits):
            raise NoteError(
                "malformed", "index must be decimal with no leading zeroes", None, digits
            )
        hashes = []
        for i, line in enumerate(rest):
            value = _b64(line, f"inclusion hash {i}")
            if len(value) != 32:
                raise NoteError("malformed", f"inclusion hash {i} length", 32, len(value))
            hashes.append(value)
        return cls(int(digits), tuple(hashes), checkpoint, extra)


_DECIMAL = re.compile(r"^(0|[1-9][0-9]*)$")


def _b64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise NoteError("malformed", f"{what} is not base64", None, text[:80]) from None


def is_tlog_proof(data: str | bytes) -> bool:
    head = data[: len(TLOG_PROOF_HEADER) + 1]
    head = head.decode("utf-8", "replace") if isinstance(head, bytes) else head
    return head == TLOG_PROOF_HEADER + "\n"


@dataclass
class TrustedKeys:
    """Keys a checkpoint may be signed by: signed-note verifier keys (``name+id+key``),
    and Ed25519 PEM keys (paired with whatever key name a note uses: the key ID still has
    to match). Loaded from a vkey line, a PEM, or the JSON of GET /v1/audit/public-key."""

    verifiers: list[Verifier]
    pems: list[bytes]

    @classmethod
    def load(cls, *items: str | bytes) -> TrustedKeys:
        keys = cls([], [])
        for item in items:
            text = (item.decode("utf-8") if isinstance(item, bytes) else item).strip()
            if text.startswith("{"):
                doc = _document(text, "public key document")
                if isinstance(doc.get("vkey"), str):
                    keys.verifiers.append(parse_vkey(doc["vkey"]))
                if isinstance(doc.get("public_key_pem"), str):
                    keys.pems.append(doc["public_key_pem"].encode())
            elif text.startswith("-----BEGIN"):
                keys.pems.append(text.encode())
            else:
                keys.verifiers.extend(parse_vkey(line) for line in text.split() if line)
        if not keys.verifiers and not keys.pems:
            raise NoteError("key", "no public key given")
        return keys

    def for_note(self, note: str | bytes) -> list[Verifier]:
        out = list(self.verifiers)
        if self.pems:
            _, signatures = parse_note(note)
            for pem in self.pems:
                key = load_public_key(pem)
                out.extend(Verifier.ed25519(name, key) for name in {s.name for s in signatures})
        return out


def open_signed_checkpoint(
    note: str | bytes, keys: TrustedKeys, *, origin: str | None = None
) -> TlogCheckpoint:
    """The checkpoint of a C2SP note, or of the JSON of GET /v1/audit/checkpoints/latest
    (its ``signed_note`` when present, else its tunegate signature under a PEM key)."""
    text = note.decode("utf-8") if isinstance(note, bytes) else note
    if text.lstrip().startswith("{"):
        doc = _document(text, "checkpoint")
        if isinstance(doc.get("signed_note"), str):
            text = doc["signed_note"]
        else:
            if not keys.pems:
                raise NoteError("key", "a JSON checkpoint needs the PEM public key")
            signed = _verified_json(doc, keys.pems)
            return TlogCheckpoint(origin or ORIGIN, signed.tree_size, signed.root_hash)
    checkpoint, _ = open_checkpoint(text, keys.for_note(text), origin=origin)
    return checkpoint


def _verified_json(doc: dict, pems: list[bytes]):
    error: CheckpointError | None = None
    for pem in pems:
        try:
            return verify_checkpoint(doc, pem)
        except CheckpointError as exc:
            error = exc
    assert error is not None
    raise error


def verify_tlog_proof(
    proof: str | bytes,
    keys: TrustedKeys,
    *,
    origin: str | None = None,
    body: bytes | None = None,
    leaf: bytes | None = None,
) -> ProofVerdict:
    """Check a c2sp.org/tlog-proof: the checkpoint note is signed by a trusted key, and the
    leaf (``leaf``, or the hash of ``body``, or of the body in the proof's extra data) is at
    ``index`` of the tree it signs. Any tool that speaks tlog-proof can do the same with
    the vkey of GET /v1/audit/public-key."""
    try:
        parsed = TlogProof.parse(proof)
        checkpoint = open_signed_checkpoint(parsed.checkpoint, keys, origin=origin)
        if leaf is None:
            body = body if body is not None else parsed.extra
            if body is None:
                raise NoteError("malformed", "no event body: pass it, or its leaf hash")
            leaf = leaf_hash(body)
            if body.startswith(b"{"):
                claimed = json.loads(body).get("seq")
                if claimed != parsed.index + 1:
                    return ProofVerdict(
                        False,
                        "leaf",
                        f"body records seq {claimed!r}, proof index is {parsed.index}",
                    )
        verify_inclusion(leaf, parsed.index, checkpoint.size, list(parsed.hashes), checkpoint.root)
    except NoteError as exc:
        code = (
            "malformed" if exc.code in ("malformed", "checkpoint", "key", "name") else "signature"
        )
        return ProofVerdict(False, code, f"checkpoint: {exc}" if code == "signature" else str(exc))
    except CheckpointError as exc:
        return ProofVerdict(False, exc.code, f"checkpoint: {exc}")
    except InclusionProofError as exc:
        return ProofVerdict(False, "inclusion", str(exc))
    except ValueError as exc:
        return ProofVerdict(False, "malformed", str(exc))
    return ProofVerdict(
        True,
        "ok",
        f"event {parsed.index + 1} is in the tree of {checkpoint.size} events that "
        f"{checkpoint.origin} signs",
    )


def parse_consistency_proof(data: str | bytes) -> tuple[int | None, int | None, list[bytes]]:
    """The JSON of GET /v1/audit/consistency ((first, second, hashes)), or bare lines of
    base64 hashes (sizes then come from the checkpoints: (None, None, hashes))."""
    text = (data.decode("utf-8") if isinstance(data, bytes) else data).strip()
    if text.startswith("{"):
        doc = _document(text, "consistency proof")
        first, second, hashes = doc.get("first"), doc.get("second"), doc.get("hashes")
        if type(first) is not int or type(second) is not int or not isinstance(hashes, list):
            raise _Malformed("a consistency proof has integer first, second and a hashes list")
        return first, second, [_b64(str(h), f"hashes[{i}]") for i, h in enumerate(hashes)]
    return None, None, [_b64(line, f"line {i + 1}") for i, line in enumerate(text.split())]


@dataclass(frozen=True)
class ConsistencyVerdict:
    ok: bool
    code: str  # ok, malformed, key, signature, origin, tree_size, consistency
    message: str
    old_size: int | None = None
    new_size: int | None = None

    def to_dict(self) -> dict:
        return {
            "ok": self.ok,
            "code": self.code,
            "message": self.message,
            "old_size": self.old_size,
            "new_size": self.new_size,
        }


def verify_checkpoint_consistency(
    old: str | bytes,
    new: str | bytes,
    proof: str | bytes | Sequence[bytes],
    keys: TrustedKeys,
    *,
    origin: str | None = None,
) -> ConsistencyVerdict:
    """Check that the newer checkpoint ``new`` extends the older one ``old`` the user kept:
    both are signed by a trusted key, name the same origin, and ``proof`` (RFC 6962) shows
    the old tree to be a prefix of the new one. A log that rewrote its history cannot
    produce such a proof."""
    sizes: tuple[int | None, int | None] = (None, None)
    try:
        old_cp = open_signed_checkpoint(old, keys, origin=origin)
        new_cp = open_signed_checkpoint(new, keys, origin=origin or old_cp.origin)
        if isinstance(proof, str | bytes):
            first, second, hashes = parse_consistency_proof(proof)
        else:
            first, second, hashes = None, None, list(proof)
        sizes = (old_cp.size, new_cp.size)
        if first is not None and (first, second) != sizes:
            return ConsistencyVerdict(
                False,
                "tree_size",
                f"the proof is from {first} to {second}, the checkpoints are {sizes[0]} and "
                f"{sizes[1]}: fetch /v1/audit/consistency?first={sizes[0]}&second={sizes[1]}",
                *sizes,
            )
        if old_cp.size > new_cp.size:
            return ConsistencyVerdict(
                False, "tree_size", f"the 'old' checkpoint ({old_cp.size}) is the larger", *sizes
            )
        verify_consistency(old_cp.size, new_cp.size, old_cp.root, new_cp.root, hashes)
    except NoteError as exc:
        code = {"checkpoint": "origin" if "origin" in exc.what else "malformed"}.get(
            exc.code, exc.code
        )
        if code in ("unverified", "signature"):
            code = "signature"
        return ConsistencyVerdict(False, code, str(exc), *sizes)
    except CheckpointError as exc:
        return ConsistencyVerdict(False, exc.code, f"checkpoint: {exc}", *sizes)
    except ConsistencyProofError as exc:
        return ConsistencyVerdict(False, "consistency", str(exc), *sizes)
    except (_Malformed, ValueError) as exc:
        return ConsistencyVerdict(False, "malformed", str(exc), *sizes)
    return ConsistencyVerdict(
        True,
        "ok",
        f"the tree of {new_cp.size} events extends the tree of {old_cp.size} events you kept "
        f"({new_cp.origin})",
        *sizes,
    )
