"""Verify the whole audit trail and name the first bad ``seq``: the checks, and a reference
verifier that makes them one row at a time.

For events 1..H, where H is the head row's ``seq``, in this order:

1. each row, in seq order (audit.verdict.row_fault):
   - its ``seq`` is the next one: 1, 2, .. H, no gap, no repeat;
   - its ``prev_hash`` is the previous event's ``hash`` (event 1: 32 zero bytes);
   - its ``hash`` is ``sha256(0x02 || prev_hash || body)`` (audit.hashing);
   - its indexed columns say what its ``body`` says: written into the body's fixed text
     frame (audit.event.BODY_HEAD/BODY_TAIL), they are its first and last bytes
     (``deep=True`` also parses every body and checks that it is canonical JSON);
2. no row lies outside 1..H (such a row competes with 1. by the seq its body claims);
3. the head row exists and names the hash of event H;
4. with ``check_checkpoints`` (default): every stored checkpoint, in tree-size order, signs
   the RFC 6962 root of events 1..its size, and none lies beyond the head; the head's
   Merkle frontier is the one of events 1..H; with ``public_key_pem``, every checkpoint's
   Ed25519 signature holds.

The first fault ends the run; its seq is ``first_bad_seq``, and ``reason`` says which check
failed and on what (audit.verdict writes every fault and its message, once).

Production runs the fast path (audit.verify_fast): the same checks, in C-level batches, in
chunks, optionally in worker processes; a property test holds it to the reference below.
Both read one snapshot: appends made meanwhile are not faults. Events queued
(``audit_queue``) and not yet chained are counted as ``pending`` in that same snapshot.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine

from audit import verify_fast
from audit.checkpoints import Checkpoint, load_public_key
from audit.hashing import GENESIS_HASH, leaf_hash
from audit.merkle import frontier_append, frontier_of, frontier_root
from audit.verdict import (
    EVENT_COLUMNS,
    Fault,
    Reason,
    Row,
    Snapshot,
    VerifyResult,
    beyond_head_fault,
    first_fault,
    frontier_fault,
    gap_fault,
    head_fault,
    root_fault,
    row_fault,
    signature_fault,
    stray_fault,
)
from audit.verify_fast import DEFAULT_CHUNK

__all__ = [
    "DEFAULT_CHUNK",
    "EVENT_COLUMNS",
    "Reason",
    "VerifyResult",
    "reference_verify",
    "verify_chain",
    "verify_chain_reference",
    "verify_rows",
    "verify_rows_reference",
]


# --- the reference -------------------------------------------------------------------------


def reference_verify(
    snapshot: Snapshot,
    rows: Sequence[Row],
    *,
    check_checkpoints: bool,
    public_key_pem: bytes | str | None,
    deep: bool = False,
) -> VerifyResult:
    """The checks of the module docstring, one after the other. ``rows``: those of seq
    1..H, in seq order (the rows outside 1..H are the snapshot's strays)."""
    fault, last_hash = _first_bad_row(rows, snapshot.head_seq, deep)
    strays = [stray_fault(seq, body, snapshot.head_seq) for seq, body in snapshot.strays]
    fault = first_fault([fault, *strays])
    if fault is None:
        fault = head_fault(snapshot, last_hash)
    if fault is not None:
        return snapshot.failed(fault)
    if not check_checkpoints:
        return snapshot.passed(0)
    key = load_public_key(public_key_pem) if public_key_pem is not None else None
    leaves = [leaf_hash(row[8]) for row in rows]
    fault, checked = _first_bad_checkpoint(snapshot.checkpoints, leaves)
    if fault is None:
        fault = frontier_fault(snapshot, frontier_of(leaves))
    if fault is None and key is not None:
        fault = signature_fault(snapshot.checkpoints, key)
    return snapshot.passed(checked) if fault is None else snapshot.failed(fault, checked)


def _first_bad_row(rows: Sequence[Row], head_seq: int, deep: bool) -> tuple[Fault | None, Any]:
    """The first row that is not event 1, 2, .. H in turn, linked to the one before; and
    the hash of the last good event (the genesis hash before event 1)."""
    last: Any = GENESIS_HASH
    for expected, row in enumerate(rows, start=1):
        fault = row_fault(row, expected, last, deep)
        if fault is not None:
            return fault, last
        last = row[10]
    if len(rows) < head_seq:
        return gap_fault(len(rows) + 1, None), last
    return None, last


def _first_bad_checkpoint(
    checkpoints: Sequence[Checkpoint], leaves: Sequence[bytes]
) -> tuple[Fault | None, int]:
    """The first checkpoint (they come in tree-size order) that does not sign the root of
    the first ``tree_size`` leaves, and how many before it did. The root is read off the
    frontier of those leaves (audit.merkle), grown one leaf at a time."""
    frontier: list[bytes] = []
    size = previous = 0
    for checked, checkpoint in enumerate(checkpoints):
        if checkpoint.tree_size > len(leaves):
            return beyond_head_fault(checkpoint, len(leaves)), checked
        while size < checkpoint.tree_size:
            frontier_append(frontier, size, leaves[size])
            size += 1
        computed = frontier_root(frontier)
        if computed != checkpoint.root_hash:
            return root_fault(previous, checkpoint, computed), checked
        previous = checkpoint.tree_size
    return None, len(checkpoints)


# --- entry points: the fast path (production) and the reference, from a database or memory --


def verify_chain(
    engine: Engine,
    *,
    check_checkpoints: bool = True,
    public_key_pem: bytes | str | None = None,
    deep: bool = False,
    workers: int = 1,
    chunk_size: int = DEFAULT_CHUNK,
) -> VerifyResult:
    """Verify the audit trail in ``engine``'s database, by the fast path: rows are read in
    aligned chunks of ``chunk_size`` (a power of two) events, in ``workers`` processes when
    there is more than one chunk. Reads through its own connections and never writes; safe
    beside concurrent appends."""
    with _snapshot(engine) as (connection, snapshot):
        return verify_fast.verify_database(
            engine,
            connection,
            snapshot,
            check_checkpoints=check_checkpoints,
            public_key_pem=public_key_pem,
            deep=deep,
            workers=workers,
            chunk_size=chunk_size,
        )


def verify_chain_reference(
    engine: Engine,
    *,
    check_checkpoints: bool = True,
    public_key_pem: bytes | str | None = None,
    deep: bool = False,
) -> VerifyResult:
    """verify_chain by the reference: every row of 1..H read into memory, then checked."""
    with _snapshot(engine) as (connection, snapshot):
        rows = _read_rows(connection, engine.dialect.name, snapshot.head_seq)
        return reference_verify(
            snapshot,
            rows,
            check_checkpoints=check_checkpoints,
            public_key_pem=public_key_pem,
            deep=deep,
        )


def verify_rows(
    rows: Sequence[Row],
    *,
    head_seq: int,
    head_hash: bytes,
    head_frontier: bytes | None = None,
    checkpoints: Sequence[Checkpoint] = (),
    public_key_pem: bytes | str | None = None,
    deep: bool = False,
    chunk_size: int = DEFAULT_CHUNK,
) -> VerifyResult:
    """Verify rows already in memory, in this process, by the fast path: tuples in
    EVENT_COLUMNS order as the database driver returns them (text as str), sorted by seq;
    checkpoints sorted by tree size. The Merkle checks run when a head frontier or
    checkpoints are given."""
    snapshot, in_range = Snapshot.of_rows(
        rows,
        head_seq=head_seq,
        head_hash=head_hash,
        head_frontier=head_frontier,
        checkpoints=checkpoints,
    )
    return verify_fast.verify_snapshot(
        snapshot,
        verify_fast.MemoryRows(in_range),
        check_checkpoints=head_frontier is not None or bool(checkpoints),
        public_key_pem=public_key_pem,
        deep=deep,
        chunk_size=chunk_size,
    )


def verify_rows_reference(
    rows: Sequence[Row],
    *,
    head_seq: int,
    head_hash: bytes,
    head_frontier: bytes | None = None,
    checkpoints: Sequence[Checkpoint] = (),
    public_key_pem: bytes | str | None = None,
    deep: bool = False,
) -> VerifyResult:
    """verify_rows by the reference."""
    snapshot, in_range = Snapshot.of_rows(
        rows,
        head_seq=head_seq,
        head_hash=head_hash,
        head_frontier=head_frontier,
        checkpoints=checkpoints,
    )
    return reference_verify(
        snapshot,
        in_range,
        check_checkpoints=head_frontier is not None or bool(checkpoints),
        public_key_pem=public_key_pem,
        deep=deep,
    )


# --- reading one snapshot of the database ---------------------------------------------------


@contextmanager
def _snapshot(engine: Engine) -> Iterator[tuple[Any, Snapshot]]:
    """A pooled DB-API connection in a read-only snapshot, and what that snapshot holds
    besides the rows; rolled back and closed afterwards."""
    connection = engine.raw_connection()
    try:
        yield connection, _read_snapshot(connection.driver_connection, engine.dialect.name)
    finally:
        try:
            connection.rollback()
        finally:
            connection.close()


def _read_snapshot(dbapi: Any, dialect: str) -> Snapshot:
    mark = "%s" if dialect == "postgresql" else "?"
    cursor = dbapi.cursor()
    try:
        if dialect == "postgresql":
            cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        elif dbapi.in_transaction is False:
            cursor.execute("BEGIN")  # one WAL snapshot for everything below
        cursor.execute("SELECT seq, hash, frontier FROM audit_chain_head WHERE id = 1")
        head = cursor.fetchone()
        if head is None:
            cursor.execute("SELECT max(seq) FROM audit_events")
            head_seq, head_hash, frontier = cursor.fetchone()[0] or 0, None, None
        else:
            head_seq, head_hash, frontier = int(head[0]), bytes(head[1]), bytes(head[2])
        cursor.execute(
            "SELECT seq, body FROM audit_events "  # noqa: S608 (a placeholder, no value)
            f"WHERE seq < 1 OR seq > {mark} ORDER BY seq LIMIT 100",
            (head_seq,),
        )
        strays = [tuple(row) for row in cursor.fetchall()]
        cursor.execute(
            "SELECT tree_size, root_hash, ts, key_id, signature FROM audit_checkpoints "
            "ORDER BY tree_size, id"
        )
        checkpoints = [
            Checkpoint(int(r[0]), bytes(r[1]), r[2], r[3], bytes(r[4])) for r in cursor.fetchall()
        ]
        cursor.execute("SELECT count(*) FROM audit_queue")
        pending = int(cursor.fetchone()[0])
    finally:
        cursor.close()
    return Snapshot(head_seq, head_hash, frontier, strays, checkpoints, pending)


def _read_rows(connection: Any, dialect: str, head_seq: int) -> list[Row]:
    """The rows of seq 1..head_seq, in seq order, as the driver returns them."""
    mark = "%s" if dialect == "postgresql" else "?"
    cursor = connection.cursor()
    try:
        cursor.execute(
            f"SELECT {', '.join(EVENT_COLUMNS)} FROM audit_events "  # noqa: S608 (constants)
            f"WHERE seq >= 1 AND seq <= {mark} ORDER BY seq",
            (head_seq,),
        )
        return [tuple(row) for row in cursor.fetchall()]
    finally:
        cursor.close()
