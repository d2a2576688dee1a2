"""Offline check of an inclusion proof against a signed checkpoint, with only the public
key: what ``tunegate audit verify-proof`` runs. No database, no network.

Inputs are the documents the gateway serves: the proof from
``GET /v1/audit/events/{seq}/proof?tree_size=N`` (audit.query.inclusion_proof), the
checkpoint from ``GET /v1/audit/checkpoints/latest`` (Checkpoint.to_json) and the PEM from
``GET /v1/audit/public-key``. Each may be a dict, JSON text or JSON bytes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from audit.checkpoints import CheckpointError, verify_checkpoint
from audit.hashing import leaf_hash
from audit.merkle import InclusionProofError, verify_inclusion
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
