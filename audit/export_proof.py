"""An export of the audit trail that proves itself offline: JSON Lines of events, then one
trailer line that ties them to a signed checkpoint.

The export (``export_with_proof``) writes the events that match the filters, up to the
checkpoint's tree size, as audit.query.export_jsonl writes them, and ends with::

    {"format": "tunegate-export-proof/v1", "checkpoint": {...}, "tree_size": N,
     "events": count, "first_seq": .., "last_seq": .., "hashes": [hex, ...]}

``hashes`` is a range proof (audit.range_proof) of the exported events' Merkle leaves
(``sha256(0x00 || body)``) in the tree of the first N events, whose root the checkpoint
signs. With only the public key, ``verify_export`` then checks that:

1. every line re-hashes: ``hash == sha256(0x02 || prev_hash || body)``;
2. seqs ascend, and each event that follows its predecessor directly links to it
   (``prev_hash`` is the previous line's ``hash``): a contiguous range is one chain;
3. the checkpoint is well formed and its Ed25519 signature holds;
4. the leaves of every exported body, with the proof, give exactly the signed root: no
   event of the range was changed, added or left out.

A fault names the first bad seq where one event is at fault (1, 2); 3 and 4 speak of the
whole file. Only the events' bytes are read back: the body is the line without its two
leading hash fields (audit.query.export_jsonl), or, for a line rewritten by some other
tool, the canonical JSON of its fields.
"""

from __future__ import annotations

import json
from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from hashlib import sha256
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    LargeBinary,
    cast,
    func,
    literal,
    select,
    type_coerce,
)
from sqlmodel import Session

from audit.checkpoints import Checkpoint, CheckpointError, verify_checkpoint
from audit.encoding import CanonicalEncodingError, canonical_json
from audit.hashing import CHAIN_PREFIX, GENESIS_HASH, LEAF_PREFIX
from audit.query import _events, _StoredTree, _where
from audit.range_proof import (
    RangeProofError,
    Run,
    range_proof,
    root_from_range_proof,
    root_of_leaves,
)

EXPORT_PROOF_FORMAT = "tunegate-export-proof/v1"
_HEAD = b'{"hash":"'
_MIDDLE = b'","prev_hash":"'
_HASH_END = 9 + 64
_PREV_START = _HASH_END + len(_MIDDLE)
_PREV_END = _PREV_START + 64
_BODY_START = _PREV_END + 2  # after '",'
_SEQ_MARK = b',"seq":'


# --- the export ---------------------------------------------------------------------------


def export_with_proof(
    session: Session,
    *,
    checkpoint: Checkpoint,
    after: int = 0,
    chunk_size: int = 1000,
    **filters: Any,
) -> Iterator[bytes]:
    """The matching events with seq in (after, checkpoint.tree_size], as JSON Lines in
    chunks of up to ``chunk_size`` lines, then the trailer line with the range proof.
    One query, streamed (memory stays at one chunk); call it in a read-only snapshot."""
    if chunk_size < 1:
        raise ValueError("chunk_size must be >= 1")
    size = checkpoint.tree_size
    connection = session.connection()
    query = (
        select(_events.c.seq, line_column(connection.dialect.name))
        .where(_events.c.seq > after, _events.c.seq <= size, *_where(**filters))
        .order_by(_events.c.seq)
    )
    cursor = _streaming_cursor(connection)
    runs: list[list[int]] = []
    count, first_seq, last_seq = 0, None, None
    try:
        cursor.execute(*_driver_statement(connection, query))
        while rows := cursor.fetchmany(chunk_size):
            _extend_runs(runs, [row[0] for row in rows])
            count += len(rows)
            first_seq = rows[0][0] if first_seq is None else first_seq
            last_seq = rows[-1][0]
            yield b"".join([bytes(row[1]) for row in rows])
    finally:
        cursor.close()
    leaf_runs = [(start, end) for start, end in runs]
    hashes = range_proof(size, leaf_runs, _StoredTree(session, size).subtree) if size else []
    trailer = {
        "format": EXPORT_PROOF_FORMAT,
        "checkpoint": checkpoint.to_json(),
        "tree_size": size,
        "events": count,
        "first_seq": first_seq,
        "last_seq": last_seq,
        "hashes": [h.hex() for h in hashes],
    }
    yield json.dumps(trailer, separators=(",", ":")).encode() + b"\n"


def _streaming_cursor(connection: Connection) -> Any:
    """A driver cursor in the connection's transaction that streams its rows (a named,
    server-side cursor on PostgreSQL; SQLite steps through its rows anyway). Rows come as
    plain tuples: no per-row work but the driver's."""
    driver = connection.connection.driver_connection
    assert driver is not None  # a live connection, inside the session's transaction
    if connection.dialect.name == "postgresql":
        return driver.cursor(name="tunegate_audit_export")
    return driver.cursor()


def _driver_statement(connection: Connection, query: Any) -> tuple[str, Any]:
    compiled = query.compile(dialect=connection.dialect)
    params = compiled.construct_params()
    if connection.dialect.positional:
        return str(compiled), tuple(params[name] for name in compiled.positiontup or ())
    return str(compiled), params


def line_column(dialect: str) -> ColumnElement[Any]:
    """An event's export line, written by the database: ``{"hash":"<hex>","prev_hash":
    "<hex>",`` then the body after its opening brace, then a newline (the line
    audit.query.export_jsonl writes, byte for byte; tests hold the two equal). Built in
    SQL, the line costs the gateway no Python per event."""
    hash_, prev, body = _events.c.hash, _events.c.prev_hash, _events.c.body
    if dialect == "postgresql":
        head = (
            literal('{"hash":"')
            .op("||")(func.encode(hash_, "hex"))
            .op("||")(literal('","prev_hash":"'))
            .op("||")(func.encode(prev, "hex"))
            .op("||")(literal('",'))
        )
        joined = (
            func.convert_to(head, "UTF8")
            .op("||")(func.substring(body, 2))
            .op("||")(literal(b"\n", LargeBinary))
        )
        return type_coerce(joined, LargeBinary)
    text = (
        literal('{"hash":"')
        .op("||")(func.lower(func.hex(hash_)))
        .op("||")(literal('","prev_hash":"'))
        .op("||")(func.lower(func.hex(prev)))
        .op("||")(literal('",'))
        .op("||")(func.substr(body, 2))
        .op("||")(func.char(10))
    )
    return cast(text, LargeBinary)


def _extend_runs(runs: list[list[int]], seqs: list[int]) -> None:
    """Add ascending seqs to the runs of leaf indices (seq - 1), a whole chunk at once when
    it is contiguous (a plain range export)."""
    first, last = seqs[0] - 1, seqs[-1] - 1
    if last - first + 1 == len(seqs):
        if runs and runs[-1][1] == first:
            runs[-1][1] = last + 1
        else:
            runs.append([first, last + 1])
        return
    for seq in seqs:
        if runs and runs[-1][1] == seq - 1:
            runs[-1][1] = seq
        else:
            runs.append([seq - 1, seq])


# --- the offline check --------------------------------------------------------------------


@dataclass(frozen=True)
class ExportVerdict:
    ok: bool
    code: str  # ok, malformed, order, hash, link, no_proof, key_id, signature, inclusion, ...
    message: str
    events: int = 0
    first_bad_seq: int | None = None
    tree_size: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "code": self.code,
            "message": self.message,
            "events": self.events,
            "first_bad_seq": self.first_bad_seq,
            "tree_size": self.tree_size,
        }


class _Fault(Exception):
    def __init__(self, code: str, message: str, seq: int | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.seq = code, message, seq


@dataclass
class _Reader:
    """The events of one export, checked line by line as they are read."""

    runs: list[list[int]] = field(default_factory=list)
    leaves: list[list[bytes]] = field(default_factory=list)
    count: int = 0
    last_seq: int = 0
    last_hash: bytes = b""
    trailer: dict[str, Any] | None = None

    def line(self, number: int, line: bytes) -> None:
        line = line.rstrip(b"\r\n")
        if not line:
            return
        if self.trailer is not None:
            raise _Fault("malformed", f"line {number}: an event after the proof trailer")
        framed = _framed(line)
        if framed is None:
            document = _json(number, line)
            if document.get("format") == EXPORT_PROOF_FORMAT:
                self.trailer = document
                return
            framed = _unframed(number, document)
        seq, digest, prev, body = framed
        self.event(seq, digest, prev, body)

    def event(self, seq: int, digest: bytes, prev: bytes, body: bytes) -> None:
        if seq <= self.last_seq:
            raise _Fault("order", f"event {seq} comes after event {self.last_seq}", seq)
        if sha256(CHAIN_PREFIX + prev + body).digest() != digest:
            raise _Fault("hash", f"event {seq} does not hash to its recorded hash", seq)
        expected = GENESIS_HASH if seq == 1 else self.last_hash
        if seq == self.last_seq + 1 and (self.count or seq == 1) and prev != expected:
            before = "the genesis hash" if seq == 1 else f"event {self.last_seq}'s hash"
            raise _Fault("link", f"event {seq}'s prev_hash is not {before}", seq)
        leaf = sha256(LEAF_PREFIX + body).digest()
        if self.runs and self.runs[-1][1] == seq - 1:
            self.runs[-1][1] = seq
            self.leaves[-1].append(leaf)
        else:
            self.runs.append([seq - 1, seq])
            self.leaves.append([leaf])
        self.count += 1
        self.last_seq, self.last_hash = seq, digest


def _framed(line: bytes) -> tuple[int, bytes, bytes, bytes] | None:
    """The line as audit.query.export_jsonl writes it, taken apart without parsing JSON."""
    if not (
        line.startswith(_HEAD)
        and line[_HASH_END:_PREV_START] == _MIDDLE
        and line[_PREV_END:_BODY_START] == b'",'
    ):
        return None
    try:
        digest = bytes.fromhex(line[len(_HEAD) : _HASH_END].decode("ascii"))
        prev = bytes.fromhex(line[_PREV_START:_PREV_END].decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        return None
    body = b"{" + line[_BODY_START:]
    mark = body.rfind(_SEQ_MARK)
    end = body.find(b",", mark + len(_SEQ_MARK)) if mark >= 0 else -1
    digits = body[mark + len(_SEQ_MARK) : end] if end > 0 else b""
    if not digits.isdigit():
        return None
    return int(digits), digest, prev, body


def _json(number: int, line: bytes) -> dict[str, Any]:
    try:
        document = json.loads(line)
    except ValueError:
        raise _Fault("malformed", f"line {number} is not JSON") from None
    if not isinstance(document, dict):
        raise _Fault("malformed", f"line {number} is not a JSON object")
    return document


def _unframed(number: int, document: dict[str, Any]) -> tuple[int, bytes, bytes, bytes]:
    """An event line rewritten by another tool: its body is the canonical JSON of the
    fields other than the two hashes."""
    event = dict(document)
    try:
        digest = bytes.fromhex(event.pop("hash"))
        prev = bytes.fromhex(event.pop("prev_hash"))
        body = canonical_json(event)
    except (KeyError, TypeError, ValueError, CanonicalEncodingError):
        raise _Fault("malformed", f"line {number} is not an exported audit event") from None
    seq = event.get("seq")
    if type(seq) is not int or seq < 1:
        raise _Fault("malformed", f"line {number} has no seq")
    return seq, digest, prev, body


def verify_export(lines: Iterable[bytes], public_key_pem: bytes | str) -> ExportVerdict:
    """The checks of the module docstring over an export's lines (bytes, as read from the
    file), with the checkpoint signer's public key."""
    reader = _Reader()
    try:
        for number, line in enumerate(lines, start=1):
            reader.line(number, line)
        size = _check_trailer(reader, public_key_pem)
    except _Fault as fault:
        return ExportVerdict(False, fault.code, fault.message, reader.count, fault.seq)
    return ExportVerdict(
        True,
        "ok",
        f"{reader.count} events re-hash to the chain and are included in the tree of "
        f"{size} events that the checkpoint signs",
        reader.count,
        tree_size=size,
    )


def _check_trailer(reader: _Reader, public_key_pem: bytes | str) -> int:
    trailer = reader.trailer
    if trailer is None:
        raise _Fault("no_proof", "the file ends without a proof trailer: the export is cut off")
    document = trailer.get("checkpoint")
    if not isinstance(document, dict):
        raise _Fault("malformed", "the trailer holds no checkpoint")
    try:
        checkpoint = verify_checkpoint(document, public_key_pem)
    except CheckpointError as exc:
        raise _Fault(exc.code, f"checkpoint: {exc}") from None
    size = checkpoint.tree_size
    if trailer.get("tree_size") != size:
        raise _Fault("malformed", "the trailer's tree_size is not the checkpoint's")
    if reader.last_seq > size:
        raise _Fault(
            "beyond_checkpoint", f"event {reader.last_seq} lies beyond the checkpoint's {size}"
        )
    if trailer.get("events") != reader.count:
        raise _Fault(
            "count",
            f"the file holds {reader.count} events, the export wrote {trailer.get('events')}",
        )
    try:
        proof = [bytes.fromhex(h) for h in trailer.get("hashes") or []]
    except (TypeError, ValueError):
        raise _Fault("malformed", "the trailer's hashes are not hex") from None
    runs: list[Run] = [(start, end) for start, end in reader.runs]
    try:
        root = root_from_range_proof(size, runs, _covered_root(reader), proof)
    except RangeProofError as exc:
        raise _Fault("inclusion", str(exc)) from None
    if root != checkpoint.root_hash:
        raise _Fault(
            "inclusion",
            "the events do not lead to the root the checkpoint signs: an event was changed, "
            "added or left out",
        )
    return size


def _covered_root(reader: _Reader) -> Callable[[int, int], bytes]:
    starts = [start for start, _ in reader.runs]

    def covered(lo: int, hi: int) -> bytes:
        i = bisect_right(starts, lo) - 1
        start = starts[i]
        return root_of_leaves(reader.leaves[i][lo - start : hi - start])

    return covered
