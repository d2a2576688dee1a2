"""C2SP tlog-witness: the add-checkpoint request, the witness's decision, and the
verifier's K-of-N cosignature rule. Pure logic: storage and HTTP live in gateway.witness.

Request body (every line ends in ``\\n``)::

    old <size the client believes the witness holds>
    <base64 hash of the RFC 6962 consistency proof from old to new>   (0..63 lines)
    <empty line>
    <the new checkpoint as a signed note>

The witness refuses, in the spec's order: a body it cannot read (400); an origin it does
not know (404); a note no trusted key of that origin signed (403); an old size above the
new one (400); an old size that is not the one it stored (409, the stored size as
``text/x.tlog.size``); the same size with another root (409); a proof that does not hold
(422). Otherwise it cosigns.

The decision is cut in two. ``verify_request`` holds the checks that need no stored state,
the log's Ed25519 signature among them: it runs outside any lock, in parallel. The store
then runs ``check_against`` and the save in one atomic step (``Store.save``), so a check
always sees the state it is saved over; the cosignature (an Ed25519 sign) comes after,
outside the store's lock again.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from audit.cosignature import (
    COSIGNATURE_TYPE,
    Cosignature,
    CosignatureError,
    CosignerKey,
    cosigner_key_id,
    parse_line,
    signed_message,
)
from audit.hashing import HASH_SIZE
from audit.merkle import ConsistencyProofError, verify_consistency
from audit.note import NoteError, TlogCheckpoint, Verifier, is_valid_name, open_note, parse_note

SIZE_CONTENT_TYPE = "text/x.tlog.size"
_UNVERIFIED = frozenset({"unverified", "signature", "key"})  # audit.note.NoteError codes
MAX_PROOF_LINES = 63
MAX_BODY_BYTES = 1 << 16


class WitnessRefusal(Exception):
    """A refused add-checkpoint. ``status`` is the HTTP status the spec names, ``code``
    machine-readable; a 409 carries ``stored_size`` (the body, as text/x.tlog.size)."""

    def __init__(
        self, status: int, code: str, message: str, *, stored_size: int | None = None
    ) -> None:
        self.status = status
        self.code = code
        self.stored_size = stored_size
        super().__init__(message)

    @property
    def body(self) -> str:
        return f"{self.stored_size}\n" if self.stored_size is not None else f"{self}\n"

    @property
    def content_type(self) -> str:
        return SIZE_CONTENT_TYPE if self.stored_size is not None else "text/plain"


# --- the request --------------------------------------------------------------------------


@dataclass(frozen=True)
class AddCheckpoint:
    old_size: int
    proof: list[bytes]
    note: str  # the signed note: checkpoint text, empty line, signature lines


def format_add_checkpoint(old_size: int, proof: Sequence[bytes], note: str) -> bytes:
    """The request body of ``POST <prefix>/add-checkpoint``."""
    lines = [f"old {old_size}\n"] + [base64.b64encode(h).decode() + "\n" for h in proof]
    return ("".join(lines) + "\n" + note).encode()


def parse_add_checkpoint(body: bytes) -> AddCheckpoint:
    """Read a request body; raises WitnessRefusal(400) when it is not one."""
    if len(body) > MAX_BODY_BYTES:
        raise WitnessRefusal(400, "witness_request_malformed", "request body too large")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise WitnessRefusal(400, "witness_request_malformed", "body is not UTF-8") from None
    head, sep, note = text.partition("\n\n")
    if not sep:
        raise WitnessRefusal(400, "witness_request_malformed", "no empty line before the note")
    lines = head.split("\n")
    first = lines[0]
    number = first[4:]
    if (
        not first.startswith("old ")
        or not number.isdigit()
        or not number.isascii()
        or (number != "0" and number.startswith("0"))
    ):
        raise WitnessRefusal(
            400, "witness_request_malformed", "first line must be 'old <size>' in decimal"
        )
    if len(lines) - 1 > MAX_PROOF_LINES:
        raise WitnessRefusal(400, "witness_request_malformed", "more than 63 proof lines")
    proof = []
    for i, line in enumerate(lines[1:], start=1):
        try:  # strict: standard alphabet, padding only at the end (as b64decode's validate)
            digest = binascii.a2b_base64(line, strict_mode=True) if len(line) == 44 else b""
        except (binascii.Error, ValueError):
            digest = b""
        if len(digest) != HASH_SIZE:
            raise WitnessRefusal(
                400, "witness_request_malformed", f"proof line {i} is not a base64 SHA-256 hash"
            )
        proof.append(digest)
    return AddCheckpoint(int(number), proof, note)


# --- the decision ---------------------------------------------------------------------------


@dataclass(frozen=True)
class LogState:
    """What a witness keeps per log: the latest checkpoint it cosigned."""

    origin: str
    size: int
    root: bytes
    note: str


@dataclass(frozen=True)
class Verified:
    """A request whose checkpoint a trusted key of its origin signed, with an old size not
    above the new one: what is left to decide needs the stored state (``check_against``)."""

    request: AddCheckpoint
    checkpoint: TlogCheckpoint
    text: str  # the note body that is cosigned

    @property
    def origin(self) -> str:
        return self.checkpoint.origin

    def state(self) -> LogState:
        return LogState(
            self.checkpoint.origin, self.checkpoint.size, self.checkpoint.root, self.request.note
        )


def verify_request(
    request: AddCheckpoint, *, log_keys: Mapping[str, Sequence[Verifier]]
) -> Verified:
    """The checks that do not depend on the stored state (the costly one is the Ed25519
    verify of the log's signature): the caller runs them outside any lock. Raises
    WitnessRefusal (400, 403, 404). ``log_keys`` maps each known origin to its keys."""
    origin = request.note.partition("\n")[0]
    verifiers = log_keys.get(origin)
    try:
        if not verifiers:
            text, _signatures = parse_note(request.note)  # a malformed note is 400 first
        else:
            text, _verified = open_note(request.note, list(verifiers))
        checkpoint = TlogCheckpoint.parse(text)
    except NoteError as exc:
        if exc.code in _UNVERIFIED:
            raise WitnessRefusal(
                403, "witness_unknown_key", "no trusted log key signed the checkpoint"
            ) from None
        raise WitnessRefusal(400, "witness_request_malformed", f"checkpoint: {exc}") from None
    if not verifiers:
        raise WitnessRefusal(404, "witness_unknown_log", f"unknown origin {origin!r}")
    if request.old_size > checkpoint.size:
        raise WitnessRefusal(
            400, "witness_old_size_too_large", f"old {request.old_size} > size {checkpoint.size}"
        )
    return Verified(request, checkpoint, text)


def check_against(verified: Verified, stored: LogState | None) -> LogState:
    """The rest of the decision, against what the witness holds for the origin
    (``stored``; None: first sight): the state to save, or WitnessRefusal (409, 422).
    Cheap (the proof's hashing): the store runs it inside the transaction that saves."""
    request, checkpoint = verified.request, verified.checkpoint
    stored_size = 0 if stored is None else stored.size
    if request.old_size != stored_size:
        raise WitnessRefusal(
            409, "witness_size_conflict", "old size is not the witness's", stored_size=stored_size
        )
    if stored is None or stored.size == 0:
        if request.proof:
            raise WitnessRefusal(422, "witness_bad_proof", "the proof from size 0 must be empty")
    elif stored.size == checkpoint.size:
        if stored.root != checkpoint.root:
            raise WitnessRefusal(
                409,
                "witness_root_conflict",
                "same size, another root: the log forked",
                stored_size=stored.size,
            )
        if request.proof:
            raise WitnessRefusal(422, "witness_bad_proof", "the proof between equal sizes is empty")
    else:
        try:
            verify_consistency(
                stored.size, checkpoint.size, stored.root, checkpoint.root, request.proof
            )
        except (ConsistencyProofError, ValueError) as exc:
            raise WitnessRefusal(422, "witness_bad_proof", f"consistency proof: {exc}") from None
    return verified.state()


class Store(Protocol):
    def save(self, verified: Verified) -> LogState:
        """In one atomic, durable step: read the stored state of ``verified.origin``,
        decide with ``check_against`` and save what it returns; raises its refusal. Returns
        only once the save is as durable as the store promises."""
        ...


@dataclass
class Witness:
    """A witness: its name and key, the logs it knows. Its store is the caller's."""

    name: str
    private_key: Ed25519PrivateKey
    log_keys: Mapping[str, Sequence[Verifier]]
    key_id: bytes = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not is_valid_name(self.name):
            raise ValueError(f"witness name {self.name!r} must be non-empty, no spaces or '+'")
        self.key_id = cosigner_key_id(self.name, self.private_key.public_key())

    def verify(self, body: bytes) -> Verified:
        """Parse a request body and run the checks that need no stored state."""
        return verify_request(parse_add_checkpoint(body), log_keys=self.log_keys)

    def add_checkpoint(self, body: bytes, store: Store, *, now: int) -> str:
        """Handle one request: verify it, let the store decide and save in one step, cosign
        (outside the store's lock). Returns the response body (the cosignature line);
        raises WitnessRefusal."""
        verified = self.verify(body)
        store.save(verified)
        return self.cosign(verified.text, now=now)

    def cosign(self, text: str, *, now: int) -> str:
        message = signed_message(text, now)
        return Cosignature(self.name, self.key_id, now, self.private_key.sign(message)).line()

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self.private_key.public_key()


# --- the verifier's side ------------------------------------------------------------------


class QuorumError(ValueError):
    """Fewer than K of the trusted witnesses cosigned the checkpoint."""

    def __init__(self, needed: int, found: int, message: str) -> None:
        self.needed = needed
        self.found = found
        super().__init__(message)


def cosigner_key(witness: CosignerKey | Verifier) -> CosignerKey:
    """A witness key as given: a CosignerKey, or a note Verifier of type 0x04."""
    if isinstance(witness, CosignerKey):
        return witness
    if witness.key_type != COSIGNATURE_TYPE:
        raise ValueError(f"witness key {witness.name} is type {witness.key_type}, not 0x04")
    return CosignerKey(witness.name, Ed25519PublicKey.from_public_bytes(witness.public_key))


def split_note(note: str) -> tuple[str, list[str]]:
    """(text, signature lines) of a signed note; the text keeps its final newline."""
    text, sep, rest = note.partition("\n\n")
    if not sep:
        raise ValueError("a signed note has an empty line before its signatures")
    return text + "\n", [line for line in rest.split("\n") if line]


def require_cosignatures(
    note: str, witnesses: Sequence[CosignerKey | Verifier], k: int
) -> list[Cosignature]:
    """The valid cosignatures on ``note`` by distinct trusted witnesses; raises
    QuorumError when fewer than ``k``. Lines of unknown keys are ignored; a line that
    claims a trusted witness's name and key ID but does not verify is ignored too (it is
    not that witness's statement), so it cannot make up the quorum."""
    keys = [cosigner_key(w) for w in witnesses]
    if k < 0 or k > len(keys):
        raise ValueError(f"quorum {k} of {len(keys)} witnesses cannot be met")
    text, lines = split_note(note)
    found: dict[bytes, Cosignature] = {}
    for line in lines:
        try:
            cosignature = parse_line(line)
        except CosignatureError:
            continue  # another kind of signature (the log's own, say)
        for key in keys:
            if key.key_id not in found and key.verify(text, cosignature):
                found[key.key_id] = cosignature
    if len(found) < k:
        raise QuorumError(
            k, len(found), f"{len(found)} of the {k} witness cosignatures required are on the note"
        )
    return list(found.values())
