"""Ed25519-signed checkpoints (tree heads) of the audit Merkle tree.

A checkpoint signs this UTF-8 text, a signed-note body in the style of transparency-dev
checkpoints::

    tunegate audit
    <tree size, decimal>
    <root hash, standard base64>
    <ts, RFC 3339 UTC with microseconds>

each line ending in ``\\n``. The key id is the hex SHA-256 of the public key's DER
SubjectPublicKeyInfo (as RFC 6962 names logs), so a checkpoint names the key that can
check it. Everything here is pure except key files; rows are written by audit.chain.

The same key also issues each checkpoint as a C2SP ``tlog-checkpoint`` signed note
(audit.note): ``<origin>\\n<size>\\n<base64 root>\\n``, signed under the key name (the
origin by default). ``Signer.checkpoint_note`` issues it for a stored checkpoint only once
the stored signature verifies, so a row changed in the database is never re-signed. Ed25519
is deterministic: a checkpoint's note is the same bytes every time it is issued, so rows
need no column for it.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
import tempfile
from dataclasses import dataclass
from hashlib import sha256
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from audit.encoding import is_canonical_ts
from audit.hashing import HASH_SIZE
from audit.note import NoteError, TlogCheckpoint, Verifier, ed25519_vkey, is_valid_name, sign_note

ORIGIN = "tunegate audit"
DEFAULT_NOTE_ORIGIN = "tunegate.example.com/audit/global"
CHECKPOINT_FORMAT = "tunegate-checkpoint/v1"


class CheckpointError(ValueError):
    """A checkpoint is malformed, names another key, or its signature does not verify.
    ``code`` is machine-readable: malformed, key_id, signature."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        super().__init__(message)


def checkpoint_note(tree_size: int, root_hash: bytes, ts: str) -> bytes:
    """The exact bytes a checkpoint's signature covers."""
    root_b64 = base64.b64encode(root_hash).decode("ascii")
    return f"{ORIGIN}\n{tree_size}\n{root_b64}\n{ts}\n".encode()


@dataclass(frozen=True)
class Checkpoint:
    tree_size: int
    root_hash: bytes
    ts: str
    key_id: str
    signature: bytes

    @property
    def note(self) -> bytes:
        return checkpoint_note(self.tree_size, self.root_hash, self.ts)

    def to_json(self) -> dict:
        """The document the gateway serves and the offline verifier reads."""
        return {
            "format": CHECKPOINT_FORMAT,
            "origin": ORIGIN,
            "tree_size": self.tree_size,
            "root_hash": self.root_hash.hex(),
            "ts": self.ts,
            "key_id": self.key_id,
            "signature": base64.b64encode(self.signature).decode("ascii"),
            "note": self.note.decode(),
        }

    @classmethod
    def from_json(cls, doc: object) -> Checkpoint:
        """Parse a checkpoint document; raises CheckpointError(code="malformed")."""
        if not isinstance(doc, dict):
            raise CheckpointError("malformed", "checkpoint must be a JSON object")
        if doc.get("format", CHECKPOINT_FORMAT) != CHECKPOINT_FORMAT:
            raise CheckpointError("malformed", f"unknown checkpoint format {doc.get('format')!r}")
        if doc.get("origin", ORIGIN) != ORIGIN:
            raise CheckpointError("malformed", f"checkpoint origin is {doc.get('origin')!r}")
        size = doc.get("tree_size")
        if type(size) is not int or size < 0:
            raise CheckpointError("malformed", "tree_size must be a non-negative integer")
        try:
            root_hash = bytes.fromhex(doc["root_hash"])
            signature = base64.b64decode(doc["signature"], validate=True)
        except (KeyError, TypeError, ValueError, binascii.Error) as exc:
            raise CheckpointError(
                "malformed", f"root_hash or signature unreadable: {exc}"
            ) from None
        if len(root_hash) != HASH_SIZE:
            raise CheckpointError("malformed", f"root_hash must be {HASH_SIZE} bytes")
        ts, key_id = doc.get("ts"), doc.get("key_id")
        if not isinstance(ts, str) or not is_canonical_ts(ts):
            raise CheckpointError("malformed", f"ts {ts!r} is not YYYY-MM-DDTHH:MM:SS.ffffffZ")
        if not isinstance(key_id, str):
            raise CheckpointError("malformed", "key_id must be a string")
        checkpoint = cls(size, root_hash, ts, key_id, signature)
        if "note" in doc and doc["note"] != checkpoint.note.decode():
            raise CheckpointError("malformed", "note text does not match the checkpoint fields")
        return checkpoint


def key_id_of(public_key: Ed25519PublicKey) -> str:
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return sha256(der).hexdigest()


def load_public_key(pem: bytes | str) -> Ed25519PublicKey:
    data = pem.encode() if isinstance(pem, str) else pem
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError as exc:
        raise CheckpointError("malformed", f"public key is not PEM: {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise CheckpointError("malformed", f"public key is {type(key).__name__}, not Ed25519")
    return key


def check_origin(origin: str) -> str:
    """A C2SP checkpoint origin that may also be a signed-note key name: non-empty, no
    spaces, no '+' (the spec's recommendation, required here)."""
    if not is_valid_name(origin):
        raise ValueError(f"origin {origin!r} must be non-empty with no spaces or '+'")
    return origin


class Signer:
    """Signs checkpoints with one Ed25519 private key, as the project's JSON checkpoints
    and as C2SP signed notes of ``origin`` under key name ``key_name`` (default: the
    origin)."""

    def __init__(
        self,
        private_key: Ed25519PrivateKey,
        *,
        origin: str = DEFAULT_NOTE_ORIGIN,
        key_name: str | None = None,
    ) -> None:
        self._key = private_key
        self.public_key = private_key.public_key()
        self.key_id = key_id_of(self.public_key)
        self.origin = check_origin(origin)
        self.key_name = check_origin(key_name or origin)

    def with_origin(self, origin: str, key_name: str | None = None) -> Signer:
        """This key, issuing notes for another origin (and key name)."""
        return Signer(self._key, origin=origin, key_name=key_name)

    @property
    def vkey(self) -> str:
        """The signed-note verifier key: ``<name>+<hex key ID>+<base64(0x01 || key)>``."""
        return ed25519_vkey(self.key_name, self.public_key)

    @property
    def verifier(self) -> Verifier:
        return Verifier.ed25519(self.key_name, self.public_key)

    def sign_note(self, text: str) -> str:
        """``text`` as a signed note by this key under its key name."""
        return sign_note(text, name=self.key_name, private_key=self._key)

    def checkpoint_note(self, checkpoint: Checkpoint) -> str:
        """The C2SP tlog-checkpoint note of a checkpoint this key signed: raises
        CheckpointError when the checkpoint's own signature does not verify (a changed
        row, another key)."""
        verify_checkpoint(checkpoint, self.public_key)
        text = TlogCheckpoint(self.origin, checkpoint.tree_size, checkpoint.root_hash).text()
        try:
            return self.sign_note(text)
        except NoteError as exc:  # pragma: no cover - origin and key name are checked
            raise CheckpointError("malformed", str(exc)) from None

    def public_key_pem(self) -> bytes:
        return self.public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def sign(self, tree_size: int, root_hash: bytes, ts: str) -> Checkpoint:
        signature = self._key.sign(checkpoint_note(tree_size, root_hash, ts))
        return Checkpoint(tree_size, root_hash, ts, self.key_id, signature)


def verify_checkpoint(
    checkpoint: Checkpoint | dict, public_key: Ed25519PublicKey | bytes | str
) -> Checkpoint:
    """Return the checkpoint if ``public_key`` signed it; raise CheckpointError if not."""
    if not isinstance(checkpoint, Checkpoint):
        checkpoint = Checkpoint.from_json(checkpoint)
    if not isinstance(public_key, Ed25519PublicKey):
        public_key = load_public_key(public_key)
    expected_id = key_id_of(public_key)
    if checkpoint.key_id != expected_id:
        raise CheckpointError(
            "key_id", f"checkpoint key_id {checkpoint.key_id} is not this key's ({expected_id})"
        )
    try:
        public_key.verify(checkpoint.signature, checkpoint.note)
    except InvalidSignature:
        raise CheckpointError(
            "signature",
            f"signature does not verify over tree_size={checkpoint.tree_size} "
            f"root={checkpoint.root_hash.hex()} ts={checkpoint.ts}",
        ) from None
    return checkpoint


# --- key files ---------------------------------------------------------------------------


def load_signer(path: str | os.PathLike) -> Signer:
    """The Ed25519 private key at ``path`` (PKCS#8 PEM, unencrypted)."""
    data = Path(path).read_bytes()
    key = serialization.load_pem_private_key(data, password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path}: private key is {type(key).__name__}, not Ed25519")
    return Signer(key)


def load_or_create_signer(path: str | os.PathLike) -> Signer:
    """Dev convenience: load the key at ``path``, or make one there first (mode 0600).

    The new key is written to a temporary file beside ``path``, flushed to disk, then
    hard-linked into place, which fails if another process got there first; then that
    process's key is the one loaded, so every process signs with the key on disk."""
    target = Path(path)
    if target.exists():
        return load_signer(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)  # mode 0600
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
            handle.flush()
            os.fsync(handle.fileno())
        with contextlib.suppress(FileExistsError):  # another process won: load theirs
            os.link(tmp, target)
    finally:
        os.unlink(tmp)
    _fsync_dir(target.parent)
    return load_signer(target)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
