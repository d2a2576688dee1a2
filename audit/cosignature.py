"""C2SP tlog-cosignature v1 (Ed25519, signature type 0x04): a witness's timestamped
statement that a checkpoint is the largest consistent tree head it has seen for a log.

- key ID     = SHA-256(name || 0x0A || 0x04 || 32-byte public key)[:4]
- message    = "cosignature/v1\\n" "time <unix seconds>\\n" + the whole checkpoint body
- line       = "— <name> " base64(key ID || u64 big-endian timestamp || Ed25519 signature)

The line is an ordinary signed-note signature line, so it can be appended to the log's
note and read by any note parser; only a verifier that knows the witness's key checks it.
Pure functions; no database, no network.
"""

from __future__ import annotations

import base64
import binascii
import struct
from dataclasses import dataclass
from hashlib import sha256

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

COSIGNATURE_TYPE = 0x04
HEADER = b"cosignature/v1\n"
EM_DASH = "\u2014"
MAX_TIMESTAMP = 2**63 - 1
_SIG_LEN = 4 + 8 + 64


class CosignatureError(ValueError):
    """A cosignature line is malformed or does not verify. ``code``: malformed, key,
    signature, timestamp."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        super().__init__(message)


def raw_public_key(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def cosigner_key_id(name: str, public_key: Ed25519PublicKey | bytes) -> bytes:
    """The 4-byte key ID of an Ed25519 cosigner (type 0x04)."""
    raw = public_key if isinstance(public_key, bytes) else raw_public_key(public_key)
    if len(raw) != 32:
        raise CosignatureError("key", f"an Ed25519 public key is 32 bytes, not {len(raw)}")
    return sha256(name.encode() + b"\n" + bytes([COSIGNATURE_TYPE]) + raw).digest()[:4]


def cosigner_vkey(name: str, public_key: Ed25519PublicKey) -> str:
    """The witness's verifier key in signed-note vkey form: name+hex(key ID)+base64(0x04||key)."""
    raw = raw_public_key(public_key)
    key_material = base64.b64encode(bytes([COSIGNATURE_TYPE]) + raw).decode()
    return f"{name}+{cosigner_key_id(name, raw).hex()}+{key_material}"


def signed_message(checkpoint_body: bytes | str, timestamp: int) -> bytes:
    """The exact bytes an Ed25519 cosignature covers."""
    body = checkpoint_body.encode() if isinstance(checkpoint_body, str) else checkpoint_body
    _check_body(body)
    _check_timestamp(timestamp)
    return HEADER + b"time %d\n" % timestamp + body


def _check_body(body: bytes) -> None:
    if not body.endswith(b"\n") or body.count(b"\n") < 3:
        raise CosignatureError(
            "malformed", "a checkpoint body is at least three lines, each ending in \\n"
        )
    if b"\n\n" in body:
        raise CosignatureError(
            "malformed", "a checkpoint body holds no empty line (signatures excluded)"
        )


def _check_timestamp(timestamp: int) -> None:
    if type(timestamp) is not int or not 0 <= timestamp <= MAX_TIMESTAMP:
        raise CosignatureError("timestamp", f"timestamp {timestamp!r} is not in [0, 2^63-1]")


@dataclass(frozen=True)
class Cosignature:
    name: str
    key_id: bytes
    timestamp: int
    signature: bytes

    def line(self) -> str:
        """The note signature line, with its final newline."""
        blob = self.key_id + struct.pack(">Q", self.timestamp) + self.signature
        return f"{EM_DASH} {self.name} {base64.b64encode(blob).decode()}\n"


def cosign(
    checkpoint_body: bytes | str, *, name: str, private_key: Ed25519PrivateKey, timestamp: int
) -> Cosignature:
    """Cosign the checkpoint body (the note text without signature lines) at ``timestamp``."""
    _check_name(name)
    message = signed_message(checkpoint_body, timestamp)
    key_id = cosigner_key_id(name, private_key.public_key())
    return Cosignature(name, key_id, timestamp, private_key.sign(message))


def _check_name(name: str) -> None:
    if not name or any(c.isspace() for c in name) or "+" in name:
        raise CosignatureError(
            "malformed", f"key name {name!r} must be non-empty, no spaces or '+'"
        )


def parse_line(line: str) -> Cosignature:
    """One signature line (with or without its newline) read as a cosignature/v1: raises
    CosignatureError(malformed) when it cannot be one."""
    text = line[:-1] if line.endswith("\n") else line
    prefix = EM_DASH + " "
    if not text.startswith(prefix) or "\n" in text:
        raise CosignatureError("malformed", "a signature line starts with '— ' and is one line")
    name, sep, blob_b64 = text[len(prefix) :].rpartition(" ")
    if not sep or not name or " " in name:
        raise CosignatureError("malformed", "a signature line is '— <name> <base64>'")
    try:
        blob = base64.b64decode(blob_b64, validate=True)
    except (binascii.Error, ValueError):
        raise CosignatureError("malformed", "signature is not standard base64") from None
    if len(blob) != _SIG_LEN:
        raise CosignatureError(
            "malformed", f"a cosignature/v1 is {_SIG_LEN} bytes (id, time, sig), not {len(blob)}"
        )
    (timestamp,) = struct.unpack(">Q", blob[4:12])
    return Cosignature(name, blob[:4], timestamp, blob[12:])


@dataclass(frozen=True)
class CosignerKey:
    """A witness a verifier trusts: its name and Ed25519 public key."""

    name: str
    public_key: Ed25519PublicKey

    @property
    def key_id(self) -> bytes:
        return cosigner_key_id(self.name, self.public_key)

    def matches(self, cosignature: Cosignature) -> bool:
        return cosignature.name == self.name and cosignature.key_id == self.key_id

    def verify(self, checkpoint_body: bytes | str, cosignature: Cosignature) -> bool:
        """True when this key made ``cosignature`` over the body (False for another key)."""
        if not self.matches(cosignature):
            return False
        try:
            message = signed_message(checkpoint_body, cosignature.timestamp)
        except CosignatureError:
            return False
        try:
            self.public_key.verify(cosignature.signature, message)
        except InvalidSignature:
            return False
        return True


def parse_cosigner_vkey(vkey: str) -> CosignerKey:
    """A vkey ``name+hexid+base64(0x04||key)`` of an Ed25519 cosigner."""
    parts = vkey.strip().split("+", 2)
    if len(parts) != 3:
        raise CosignatureError("malformed", "a vkey is <name>+<hex key id>+<base64 key>")
    name, hex_id, key_b64 = parts
    _check_name(name)
    try:
        material = base64.b64decode(key_b64, validate=True)
        key_id = bytes.fromhex(hex_id)
    except (binascii.Error, ValueError):
        raise CosignatureError("malformed", "vkey key id or key is unreadable") from None
    if len(material) != 33 or material[0] != COSIGNATURE_TYPE:
        raise CosignatureError("key", "not an Ed25519 cosignature/v1 (type 0x04) vkey")
    if len(hex_id) != 8 or key_id != cosigner_key_id(name, material[1:]):
        raise CosignatureError("key", "vkey key id does not match its name and key")
    return CosignerKey(name, Ed25519PublicKey.from_public_bytes(material[1:]))


def verify_line(checkpoint_body: bytes | str, line: str, key: CosignerKey) -> Cosignature:
    """Parse and check one line against ``key``; raises CosignatureError unless it holds."""
    cosignature = parse_line(line)
    if not key.matches(cosignature):
        raise CosignatureError("key", f"line is signed by {cosignature.name}, not by {key.name}")
    if not key.verify(checkpoint_body, cosignature):
        raise CosignatureError("signature", f"cosignature of {key.name} does not verify")
    return cosignature
