"""Writing an evidence bundle: a zip written straight to a file object, its sha256
computed while it is written, each member's sha256 listed in MANIFEST.json (written
last). The members are the documents the gateway serves; nothing here reads a database."""

from __future__ import annotations

import base64
import hashlib
import json
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import IO, Any

BUNDLE_FORMAT = "tunegate-evidence/v1"
MANIFEST = "MANIFEST.json"
CHECKPOINT = "checkpoint.txt"
EVENTS = "events.jsonl"
LOG_VKEY = "keys/log.vkey"
LOG_PEM = "keys/log.pem"
WITNESS_VKEYS = "keys/witnesses.vkey"


class _HashingWriter:
    """A write-only, unseekable file that hashes and counts what passes through it (the
    zip then uses data descriptors, so it never seeks back)."""

    def __init__(self, target: IO[bytes]) -> None:
        self.target = target
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        self.target.write(data)
        self.size += len(data)
        return len(data)

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        self.target.flush()

    def close(self) -> None:
        """The target stays open: its owner streams it."""


def event_line(event: dict[str, Any], *, index: int, tree_size: int, hashes: list[bytes]) -> bytes:
    """One events.jsonl line: the event's body fields and its inclusion proof (leaf index,
    tree size, base64 hashes, as c2sp.org/tlog-proof writes them)."""
    line = {
        "event": event,
        "proof": {
            "index": index,
            "tree_size": tree_size,
            "hashes": [base64.b64encode(h).decode("ascii") for h in hashes],
        },
    }
    return json.dumps(line, ensure_ascii=False, sort_keys=True).encode("utf-8") + b"\n"


def json_bytes(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, indent=2, sort_keys=False).encode("utf-8") + b"\n"


@dataclass
class BundleWriter:
    """``with BundleWriter(fp, manifest) as w: w.add(name, data) ...``; the manifest
    (``manifest`` plus the members' sha256) is written on close."""

    target: IO[bytes]
    manifest: dict[str, Any]
    files: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._out = _HashingWriter(self.target)
        self._zip = zipfile.ZipFile(self._out, mode="w", compression=zipfile.ZIP_DEFLATED)

    def __enter__(self) -> BundleWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def add(self, name: str, data: bytes) -> None:
        self._zip.writestr(name, data)
        self.files[name] = hashlib.sha256(data).hexdigest()

    def add_lines(self, name: str, lines: Iterable[bytes]) -> int:
        """A member written line by line (never whole in memory); the number of lines."""
        digest, count = hashlib.sha256(), 0
        with self._zip.open(name, mode="w") as member:
            for line in lines:
                member.write(line)
                digest.update(line)
                count += 1
        self.files[name] = digest.hexdigest()
        return count

    def close(self) -> None:
        if self._zip.fp is None:
            return
        manifest = {**self.manifest, "files": dict(sorted(self.files.items()))}
        self._zip.writestr(MANIFEST, json_bytes(manifest))
        self._zip.close()
        self._out.flush()

    @property
    def sha256(self) -> str:
        return self._out.digest.hexdigest()

    @property
    def size(self) -> int:
        return self._out.size
