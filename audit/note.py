"""C2SP signed notes (c2sp.org/signed-note) and transparency-log checkpoints
(c2sp.org/tlog-checkpoint), with Ed25519 signatures. Pure: stdlib and ``cryptography``.

A signed note is a text ending in a newline, a blank line, then one or more signature
lines ``— <key name> base64(4-byte key ID || signature)``. The key ID of an Ed25519 key is
``SHA-256(name || 0x0A || 0x01 || public key)[:4]``. A verifier ignores signatures by
keys it does not know (by name *and* ID), must verify those it knows, and rejects a note
that no known key verifies. This module accepts up to 100 signature lines (the spec's
minimum is 16; golang.org/x/mod/sumdb/note stops at 100).

A checkpoint's note text is the log's origin, the tree size in decimal and the base64
RFC 6962 root, one per line; later lines are extension lines, tolerated when parsing and
never written here.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence
from dataclasses import dataclass
from hashlib import sha256

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

ED25519 = 0x01  # signed-note signature type of Ed25519
MAX_SIGNATURES = 100
SIG_PREFIX = "— "  # em dash (U+2014), space
_B64 = re.compile(r"^[A-Za-z0-9+/]*={0,2}$")
_DECIMAL = re.compile(r"^(0|[1-9][0-9]*)$")


class NoteError(ValueError):
    """A note, key or checkpoint is malformed or does not verify. ``code`` is
    machine-readable (malformed, name, key, too_many_signatures, unverified, signature,
    checkpoint); ``expected`` and ``found`` say what was wanted and what came."""

    def __init__(self, code: str, what: str, expected: object = None, found: object = None):
        self.code = code
        self.what = what
        self.expected = expected
        self.found = found
        message = what
        if expected is not None or found is not None:
            message = f"{what}: expected {_show(expected)}, found {_show(found)}"
        super().__init__(message)


def _show(value: object) -> str:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, str) and len(value) > 120:
        return repr(value[:117] + "...")
    return repr(value) if isinstance(value, str) else str(value)


def is_valid_name(name: str) -> bool:
    """Key names (and so origins used as key names): non-empty, no Unicode spaces, no '+'."""
    return bool(name) and "+" not in name and not any(ch.isspace() for ch in name)


def _check_name(name: str, what: str = "key name") -> None:
    if not is_valid_name(name):
        raise NoteError("name", f"{what} must be non-empty with no spaces or '+'", None, name)


def key_id(name: str, key_type: int, public_key: bytes) -> bytes:
    """SHA-256(name || "\\n" || type || key)[:4], the key ID the spec recommends."""
    return sha256(name.encode() + b"\n" + bytes([key_type]) + public_key).digest()[:4]


def _raw(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def ed25519_vkey(name: str, public_key: Ed25519PublicKey) -> str:
    """The verifier key string ``<name>+<hex key ID>+<base64(0x01 || public key)>``, as
    golang.org/x/mod/sumdb/note writes it."""
    _check_name(name)
    raw = _raw(public_key)
    encoded = base64.b64encode(bytes([ED25519]) + raw).decode("ascii")
    return f"{name}+{key_id(name, ED25519, raw).hex()}+{encoded}"


@dataclass(frozen=True)
class Verifier:
    """A known key: name, 4-byte key ID, signature type and public key bytes (without the
    type byte)."""

    name: str
    key_id: bytes
    key_type: int
    public_key: bytes

    def verify(self, msg: bytes, sig: bytes) -> bool:
        if self.key_type != ED25519:
            return False
        try:
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(sig, msg)
        except (InvalidSignature, ValueError):
            return False
        return True

    @property
    def vkey(self) -> str:
        encoded = base64.b64encode(bytes([self.key_type]) + self.public_key).decode("ascii")
        return f"{self.name}+{self.key_id.hex()}+{encoded}"

    @classmethod
    def ed25519(cls, name: str, public_key: Ed25519PublicKey) -> Verifier:
        return parse_vkey(ed25519_vkey(name, public_key))


def parse_vkey(vkey: str) -> Verifier:
    """A verifier key ``name+hex8+base64(type || key)``; only Ed25519 (type 0x01) keys
    verify. Raises NoteError(code="key") on any mangling, as the Go reference does."""
    name, _, rest = vkey.partition("+")
    hash16, _, key64 = rest.partition("+")
    if not re.fullmatch(r"[0-9a-fA-F]{8}", hash16) or not is_valid_name(name):
        raise NoteError("key", "verifier key must be name+<8 hex digits>+<base64>", None, vkey)
    key = _b64decode(key64)
    if not key:
        raise NoteError("key", "verifier key has no key bytes", None, vkey)
    wanted = bytes.fromhex(hash16)
    computed = key_id(name, key[0], key[1:])
    if wanted != computed:
        raise NoteError("key", f"key ID of verifier key {name}", computed, wanted)
    if key[0] != ED25519:
        raise NoteError("key", "verifier key algorithm", ED25519, key[0])
    if len(key) != 33:
        raise NoteError("key", "Ed25519 public key length", 32, len(key) - 1)
    return Verifier(name=name, key_id=wanted, key_type=key[0], public_key=key[1:])


def _b64decode(text: str) -> bytes | None:
    if not _B64.match(text) or len(text) % 4:
        return None
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


@dataclass(frozen=True)
class NoteSignature:
    """One signature line: key name, 4-byte key ID, and the signature after the ID."""

    name: str
    key_id: bytes
    signature: bytes

    @property
    def line(self) -> str:
        encoded = base64.b64encode(self.key_id + self.signature).decode("ascii")
        return f"{SIG_PREFIX}{self.name} {encoded}\n"


def sign_note(text: str, *, name: str, private_key: Ed25519PrivateKey) -> str:
    """The signed note of ``text`` (which must end in a newline) with one Ed25519
    signature by ``private_key`` under key ``name``."""
    _check_text(text)
    _check_name(name)
    raw = _raw(private_key.public_key())
    signature = private_key.sign(text.encode("utf-8"))
    line = NoteSignature(name, key_id(name, ED25519, raw), signature).line
    return f"{text}\n{line}"


def signature_line(text: str, *, name: str, private_key: Ed25519PrivateKey) -> str:
    """Just the signature line sign_note would add (a cosigner's contribution)."""
    return sign_note(text, name=name, private_key=private_key)[len(text) + 1 :]


def add_signature_lines(note: str, lines: Sequence[str]) -> str:
    """``note`` with the signature ``lines`` appended (each parsed first; a line the note
    already holds is not repeated)."""
    text, existing = parse_note(note)
    have = {s.line for s in existing}
    out = [s.line for s in existing]
    for line in lines:
        line = line if line.endswith("\n") else line + "\n"
        for signature in _parse_signatures(line):
            if signature.line not in have:
                have.add(signature.line)
                out.append(signature.line)
    if len(out) > MAX_SIGNATURES:
        raise NoteError("too_many_signatures", "signature lines", MAX_SIGNATURES, len(out))
    return text + "\n" + "".join(out)


def _check_text(text: str) -> None:
    if not text.endswith("\n"):
        raise NoteError("malformed", "note text must end in a newline", "\\n", text[-1:])
    _check_chars(text)


def _check_chars(text: str) -> None:
    for i, ch in enumerate(text):
        if ch < " " and ch != "\n":
            raise NoteError("malformed", f"control character at offset {i}", None, hex(ord(ch)))


def parse_note(note: str | bytes) -> tuple[str, list[NoteSignature]]:
    """The text (with its final newline) and every signature of a signed note, checking
    only its form: valid UTF-8, no control characters but newline, a blank line before
    one or more well-formed signature lines, at most MAX_SIGNATURES of them. Repeated
    identical lines are kept once."""
    if isinstance(note, bytes):
        try:
            note = note.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise NoteError("malformed", "note is not UTF-8", None, str(exc)) from None
    _check_chars(note)
    split = note.rfind("\n\n")
    if split < 0:
        raise NoteError("malformed", "note has no blank line before its signatures")
    text, block = note[: split + 1], note[split + 2 :]
    if not block or not block.endswith("\n"):
        raise NoteError("malformed", "note must end with signature lines, each ending in \\n")
    return text, _parse_signatures(block)


def _parse_signatures(block: str) -> list[NoteSignature]:
    signatures: list[NoteSignature] = []
    seen: set[str] = set()
    lines = block.split("\n")[:-1]
    if len(lines) > MAX_SIGNATURES:
        raise NoteError("too_many_signatures", "signature lines", MAX_SIGNATURES, len(lines))
    for number, line in enumerate(lines, start=1):
        if not line.startswith(SIG_PREFIX):
            raise NoteError(
                "malformed", f"signature line {number} must start with '— '", None, line
            )
        name, _, b64 = line[len(SIG_PREFIX) :].partition(" ")
        raw = _b64decode(b64)
        if not is_valid_name(name) or not b64 or raw is None or len(raw) < 5:
            raise NoteError(
                "malformed", f"signature line {number} is not '— name base64'", None, line
            )
        if line in seen:
            continue
        seen.add(line)
        signatures.append(NoteSignature(name, raw[:4], raw[4:]))
    return signatures


def open_note(note: str | bytes, verifiers: Sequence[Verifier]) -> tuple[str, list[NoteSignature]]:
    """The text and the signatures that ``verifiers`` verified. Signatures by unknown keys
    (name and key ID both matching none) are ignored; a known key's bad signature, or no
    verified signature at all, raises NoteError (code "signature" / "unverified")."""
    text, signatures = parse_note(note)
    known: dict[tuple[str, bytes], list[Verifier]] = {}
    for verifier in verifiers:
        known.setdefault((verifier.name, verifier.key_id), []).append(verifier)
    message = text.encode("utf-8")
    verified: list[NoteSignature] = []
    done: set[tuple[str, bytes]] = set()
    for signature in signatures:
        key = (signature.name, signature.key_id)
        candidates = known.get(key)
        if not candidates:
            continue
        if len({v.public_key for v in candidates}) > 1:
            raise NoteError("key", f"ambiguous key {signature.name}+{signature.key_id.hex()}")
        if key in done:
            continue
        done.add(key)
        if not candidates[0].verify(message, signature.signature):
            raise NoteError(
                "signature",
                f"invalid signature for key {signature.name}+{signature.key_id.hex()}",
            )
        verified.append(signature)
    if not verified:
        names = sorted({f"{v.name}+{v.key_id.hex()}" for v in verifiers})
        found = sorted({f"{s.name}+{s.key_id.hex()}" for s in signatures})
        raise NoteError("unverified", "note has no verifiable signatures", names, found)
    return text, verified


# --- checkpoints (c2sp.org/tlog-checkpoint) ----------------------------------------------


@dataclass(frozen=True)
class TlogCheckpoint:
    """A tree head: origin, tree size and RFC 6962 root. ``extensions`` are the optional
    extension lines a parsed checkpoint carried (this project never writes any)."""

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def text(self) -> str:
        """The note text: origin, decimal size, base64 root, each ending in a newline."""
        if not self.origin or "\n" in self.origin:
            raise NoteError("checkpoint", "origin must be one non-empty line", None, self.origin)
        if self.size < 0:
            raise NoteError("checkpoint", "tree size must be >= 0", None, self.size)
        if self.extensions:
            raise NoteError(
                "checkpoint", "extension lines are not written", 0, len(self.extensions)
            )
        root = base64.b64encode(self.root).decode("ascii")
        return f"{self.origin}\n{self.size}\n{root}\n"

    @classmethod
    def parse(cls, text: str) -> TlogCheckpoint:
        """The checkpoint whose note text this is (the text part of a note, with its final
        newline). Raises NoteError(code="checkpoint")."""
        if not text.endswith("\n"):
            raise NoteError("checkpoint", "checkpoint text must end in a newline")
        lines = text[:-1].split("\n")
        if len(lines) < 3:
            raise NoteError("checkpoint", "checkpoint lines", ">= 3", len(lines))
        origin, size, root64, *extensions = lines
        if not origin:
            raise NoteError("checkpoint", "checkpoint origin must be non-empty")
        if not _DECIMAL.match(size):
            raise NoteError(
                "checkpoint", "tree size must be decimal with no leading zeroes", None, size
            )
        root = _b64decode(root64)
        if root is None or len(root) != 32:
            raise NoteError("checkpoint", "root hash must be base64 of 32 bytes", None, root64)
        if any(not line for line in extensions):
            raise NoteError("checkpoint", "extension lines must be non-empty")
        return cls(origin, int(size), root, tuple(extensions))


def sign_checkpoint_note(
    checkpoint: TlogCheckpoint, *, name: str, private_key: Ed25519PrivateKey
) -> str:
    return sign_note(checkpoint.text(), name=name, private_key=private_key)


def open_checkpoint(
    note: str | bytes, verifiers: Sequence[Verifier], *, origin: str | None = None
) -> tuple[TlogCheckpoint, list[NoteSignature]]:
    """The checkpoint a signed note holds, once ``verifiers`` verified it (and its origin
    is ``origin``, when given)."""
    text, signatures = open_note(note, verifiers)
    checkpoint = TlogCheckpoint.parse(text)
    if origin is not None and checkpoint.origin != origin:
        raise NoteError("checkpoint", "checkpoint origin", origin, checkpoint.origin)
    return checkpoint, signatures
