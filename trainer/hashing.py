"""Content hashes shared by base models, datasets and artifacts (no torch: the gateway
re-hashes artifacts with these too)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from trainer.results import ArtifactFile

_HASH_CHUNK = 1 << 20
# An artifact directory's list of its files with their hashes (left out of that list).
CHECKSUMS_NAME = "SHA256SUMS"


def sha256_file(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def canonical_json_bytes(value: Any) -> bytes:
    """Sorted keys, no whitespace: the same value always hashes the same."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sha256_json(value: Any) -> str:
    return hashlib.sha256(canonical_json_bytes(value)).hexdigest()


def hash_tree(directory: Path) -> list[ArtifactFile]:
    """Every file under `directory` but the checksum list, with its sha256 and size."""
    return [
        ArtifactFile(
            relative_path=path.relative_to(directory).as_posix(),
            sha256=sha256_file(path),
            bytes=path.stat().st_size,
        )
        for path in sorted(directory.rglob("*"))
        if path.is_file() and path.name != CHECKSUMS_NAME
    ]
