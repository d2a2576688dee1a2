"""What the audit pages hand out: CSV from the API's JSONL export, and a proof bundle (an
uncompressed tar of the three files `tunegate audit verify-proof` takes)."""

from __future__ import annotations

import csv
import io
import json
import tarfile
from collections.abc import Iterable, Iterator
from typing import Any

CSV_COLUMNS = (
    "seq",
    "ts",
    "actor",
    "tenant",
    "action",
    "resource",
    "decision",
    "policy_version",
    "details",
    "prev_hash",
    "hash",
)


def csv_lines(jsonl: Iterable[bytes]) -> Iterator[bytes]:
    """The export's events as CSV rows (details as compact JSON), streamed as they come."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    pending = b""
    for chunk in jsonl:
        pending += chunk
        *complete, pending = pending.split(b"\n")
        for line in complete:
            if line.strip():
                writer.writerow(_row(json.loads(line)))
        yield out.getvalue().encode()
        out.seek(0)
        out.truncate()
    if pending.strip():
        writer.writerow(_row(json.loads(pending)))
        yield out.getvalue().encode()


def _row(event: dict[str, Any]) -> list[Any]:
    cells = []
    for column in CSV_COLUMNS:
        value = event.get(column)
        if isinstance(value, dict | list):
            value = json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
        cells.append(_safe(value))
    return cells


def _safe(value: Any) -> Any:
    """A spreadsheet runs a cell that starts with = + - @: such text is quoted with a '."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def proof_bundle(
    *, proof: dict[str, Any], checkpoint: dict[str, Any], signed_note: str, public_key_pem: bytes
) -> bytes:
    """The proof, its checkpoint as JSON and as the C2SP signed note, and the key's PEM."""
    files = {
        "proof.json": json.dumps(proof, indent=2).encode() + b"\n",
        "checkpoint.json": json.dumps(checkpoint, indent=2).encode() + b"\n",
        "checkpoint.note": signed_note.encode(),
        "public-key.pem": public_key_pem,
    }
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()
