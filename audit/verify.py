"""Verify the whole audit trail and name the first bad ``seq``.

Checks, for events 1..H where H is the head row's ``seq``:

- ``seq`` runs 1, 2, .. H with no gap, and no row lies outside 1..H;
- each ``prev_hash`` is the previous event's ``hash`` (genesis: 32 zero bytes);
- each ``hash`` recomputes from ``prev_hash`` and ``body`` (audit.hashing);
- the indexed columns equal what ``body`` says: they are re-encoded into the body's fixed
  text frame (audit.event.BODY_HEAD/BODY_TAIL) and compared as bytes, so no JSON is parsed
  on the good path (``deep=True`` also parses every body and checks it is canonical);
- the head row names the last event's hash;
- with ``check_checkpoints`` (default), the Merkle tree is rebuilt from the bodies: every
  stored checkpoint's root must match the root at its tree size, no checkpoint may lie
  beyond the head, and the head's frontier must match; with ``public_key_pem``, every
  checkpoint's signature is checked too.

Rows are read through the raw DB-API cursor in aligned chunks of ``chunk_size`` (a power
of two) events. Each row stores its ``prev_hash``, so chunks verify independently; with
``workers > 1`` they run in worker processes (from a forkserver) that open their own
connections, and the parent links the chunks, combines their Merkle subtrees and judges
the checkpoints.
The whole run reads one snapshot for the head, so appends made meanwhile are not faults.
Events queued (``audit_queue``) and not yet chained are counted as ``pending`` in that
same snapshot; they are not part of the chain yet, so never a fault.
"""

from __future__ import annotations

import contextlib
import gc
import json
import multiprocessing
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from hashlib import sha256
from itertools import chain
from operator import add, itemgetter

from sqlalchemy import Engine, create_engine
from sqlalchemy.pool import NullPool

from audit.checkpoints import Checkpoint, CheckpointError, load_public_key, verify_checkpoint
from audit.encoding import CanonicalEncodingError, canonical_json, quote
from audit.event import BODY_HEAD, BODY_TAIL, EVENT_KEYS
from audit.hashing import CHAIN_PREFIX, EMPTY_ROOT, GENESIS_HASH, LEAF_PREFIX
from audit.merkle import (
    frontier_append,
    frontier_root,
    levels,
    prefix_frontier,
    unpack_frontier,
)

DEFAULT_CHUNK = 1 << 16
FETCH_BATCH = 8192
EVENT_COLUMNS = (
    "seq",
    "ts",
    "actor",
    "tenant",
    "action",
    "resource",
    "decision",
    "policy_version",
    "body",
    "prev_hash",
    "hash",
)
SELECT_ROWS = f"SELECT {', '.join(EVENT_COLUMNS)} FROM audit_events"  # noqa: S608 (constants)


@dataclass(frozen=True)
class Reason:
    code: str
    message: str


@dataclass(frozen=True)
class VerifyResult:
    """``length``: events in the chain (the head's seq); ``head``: the head hash (hex);
    ``pending``: events queued and not yet chained, in the same snapshot."""

    ok: bool
    length: int
    head: str | None
    first_bad_seq: int | None = None
    reason: Reason | None = None
    checkpoints_checked: int = 0
    pending: int = 0

    def to_dict(self) -> dict:
        return {
            "ok": self.ok,
            "length": self.length,
            "head": self.head,
            "first_bad_seq": self.first_bad_seq,
            "reason": None
            if self.reason is None
            else {"code": self.reason.code, "message": self.reason.message},
            "checkpoints_checked": self.checkpoints_checked,
            "pending": self.pending,
        }


@dataclass
class _Chunk:
    """What one chunk of rows told: its first fault, its ends, its Merkle pieces."""

    problem: tuple[int, str, str] | None = None
    first_prev: bytes | None = None
    last_hash: bytes | None = None
    frontiers: dict[int, list[bytes]] = field(default_factory=dict)


# --- the per-row work --------------------------------------------------------------------
#
# Each fetched batch is first checked whole, with C-level map/zip chains and no Python code
# per row (_batch_ok). Only a batch that fails there, or that the fast check cannot decide,
# is walked row by row (_first_fault), which finds the first fault and says what it is.

_sha = sha256
_digest = type(sha256()).digest
# The body frame with the string columns written raw between quotes (policy_version comes
# pre-quoted, being nullable). Equal to the canonical frame whenever no column holds a `"`
# and no body holds a backslash: canonical JSON writes a `"`, a backslash or a control
# character inside a string only as an escape, which starts with a backslash.
_RAW_HEAD = BODY_HEAD.replace("%s", '"%s"')
_RAW_TAIL = BODY_TAIL.replace('"resource":%s', '"resource":"%s"').replace(
    '"tenant":%s,"ts":%s', '"tenant":"%s","ts":"%s"'
)
# per type of the text columns: head and tail formats, empty, double quote, null
_FRAMES = {
    bytes: (_RAW_HEAD.encode(), _RAW_TAIL.encode(), b"", b'"', b"null"),
    str: (_RAW_HEAD, _RAW_TAIL, "", '"', "null"),
}
_TEXT = (1, 2, 3, 4, 5, 6)  # ts, actor, tenant, action, resource, decision


def _batch_ok(cols: tuple, start: int, prev: bytes) -> bool:
    """True only if every row of the batch is right; False means "walk it row by row"."""
    seqs, tss, actors, tenants, actions, resources, decisions, versions, bodies, prevs, hashes = (
        cols
    )
    try:
        if seqs != tuple(range(start, start + len(seqs))):
            return False
        if prevs[0] != prev or prevs[1:] != hashes[:-1]:
            return False
        chained = map(_digest, map(_sha, map(add, map(CHAIN_PREFIX.__add__, prevs), bodies)))
        if tuple(chained) != hashes:
            return False
        kind = type(actors[0])
        head_fmt, tail_fmt, empty, dq, null = _FRAMES[kind]
        if b"\\" in b"".join(bodies) or dq in empty.join(chain(*(cols[i] for i in _TEXT))):
            return False
        quoted = {v: null if v is None else dq + v + dq for v in set(versions)}
        if any(v is not None and dq in v for v in quoted):
            return False
        heads = map(head_fmt.__mod__, zip(actions, actors, decisions, strict=True))
        tails = map(
            tail_fmt.__mod__,
            zip(map(quoted.__getitem__, versions), resources, seqs, tenants, tss, strict=True),
        )
        if kind is str:
            heads, tails = map(str.encode, heads), map(str.encode, tails)
        return all(map(bytes.startswith, bodies, heads)) and all(map(bytes.endswith, bodies, tails))
    except (KeyError, TypeError, AttributeError, UnicodeEncodeError):
        return False


def _as_text(row: tuple) -> tuple:
    """A row with its text columns as str (the DB sources fetch them as UTF-8 bytes)."""
    out = list(row)
    for i in range(1, 8):
        if isinstance(out[i], bytes):
            with contextlib.suppress(UnicodeDecodeError):  # else bytes: a column mismatch
                out[i] = out[i].decode("utf-8")
    return tuple(out)


def _first_fault(
    batch: Sequence[tuple], expected: int, last: bytes | None, deep: bool, text_as_bytes: bool
) -> tuple[int, str, str] | None:
    """Walk rows one by one; the first fault as (seq, code, message), or None."""
    q, head_fmt, tail_fmt = quote, BODY_HEAD, BODY_TAIL
    for raw_row in batch:
        row = _as_text(raw_row) if text_as_bytes else raw_row
        seq, ts, actor, tenant, action, resource, decision, version, body, prev, h = row
        if seq != expected:
            return _seq_problem(expected, row)
        if last is not None and prev != last:
            return (seq, "prev_hash_mismatch", _link_message(seq, last, prev))
        try:
            good_hash = _sha(CHAIN_PREFIX + prev + body).digest() == h
        except TypeError:
            good_hash = False
        if not good_hash:
            return (seq, "hash_mismatch", f"event {seq}: hash does not recompute")
        try:
            framed = body.startswith(
                (head_fmt % (q(action), q(actor), q(decision))).encode()
            ) and body.endswith(
                (
                    tail_fmt
                    % (
                        "null" if version is None else q(version),
                        q(resource),
                        seq,
                        q(tenant),
                        q(ts),
                    )
                ).encode()
            )
        except (TypeError, UnicodeEncodeError):
            framed = False
        if not framed or (deep and not _is_canonical_body(body)):
            return (seq, "column_mismatch", _column_message(row))
        last = h
        expected += 1
    return None


def _check_rows(
    batches: Iterable[Sequence[tuple]],
    start: int,
    end: int,
    sizes: Sequence[int],
    merkle: bool,
    deep: bool,
    text_as_bytes: bool = False,
) -> _Chunk:
    """Verify the rows of seq start..end (batches of DB-API tuples, ordered by seq).
    ``sizes``: local tree sizes whose frontier the parent wants (for checkpoints)."""
    gc_was_on = gc.isenabled()
    gc.disable()  # nothing here makes cycles, and the batches would trigger full passes
    try:
        return _check_batches(batches, start, end, sizes, merkle, deep, text_as_bytes)
    finally:
        if gc_was_on:
            gc.enable()


def _check_batches(
    batches: Iterable[Sequence[tuple]],
    start: int,
    end: int,
    sizes: Sequence[int],
    merkle: bool,
    deep: bool,
    text_as_bytes: bool,
) -> _Chunk:
    out = _Chunk()
    leaves: list[bytes] = []
    expected, last = start, None
    for batch in batches:
        cols = tuple(zip(*batch, strict=True))
        if out.first_prev is None:
            out.first_prev = cols[9][0]
        if deep or not _batch_ok(cols, expected, out.first_prev if last is None else last):
            problem = _first_fault(batch, expected, last, deep, text_as_bytes)
            if problem is not None:
                out.problem = problem
                return out
        if merkle:
            leaves += map(_digest, map(_sha, map(LEAF_PREFIX.__add__, cols[8])))
        expected += len(batch)
        last = cols[10][-1]
    if expected != end + 1:
        out.problem = (expected, "seq_gap", f"event {expected} is missing")
        return out
    out.last_hash = last
    if merkle:
        tree = levels(leaves)
        for size in (*sizes, len(leaves)):
            out.frontiers[size] = prefix_frontier(tree, size)
    return out


def _seq_problem(expected: int, row: tuple) -> tuple[int, str, str]:
    seq = row[0]
    if isinstance(seq, int) and seq > expected:
        return (expected, "seq_gap", f"event {expected} is missing (next row has seq {seq})")
    return (expected, "seq_gap", f"event {expected} is missing (found a row with seq {seq!r})")


def _link_message(seq: int, expected: bytes, found: object) -> str:
    shown = found.hex() if isinstance(found, bytes) else repr(found)
    return f"event {seq}: prev_hash is {shown}, event {seq - 1} has hash {expected.hex()}"


def _body_fields(body: object) -> dict | None:
    try:
        parsed = json.loads(body)
    except (TypeError, ValueError):
        return None
    return parsed if isinstance(parsed, dict) else None


def _is_canonical_body(body: bytes) -> bool:
    parsed = _body_fields(body)
    if parsed is None or set(parsed) != set(EVENT_KEYS):
        return False
    try:
        return canonical_json(parsed) == body
    except CanonicalEncodingError:
        return False


def _column_message(row: tuple) -> str:
    seq, body = row[0], row[8]
    parsed = _body_fields(body)
    if parsed is None:
        return f"event {seq}: body is not a JSON object"
    for name, value in zip(EVENT_COLUMNS[:8], row[:8], strict=True):
        if parsed.get(name, object()) != value:
            return f"event {seq}: column {name} is {value!r}, body says {parsed.get(name)!r}"
    return f"event {seq}: body is not in canonical form"


# --- sources of rows: a database (one connection per process) or a list in memory ----------

_SOURCE: object = None  # set in each worker process (and in the parent for workers=1)


class _DatabaseRows:
    """Rows from a DB-API connection. PostgreSQL sends text as raw UTF-8 bytes (client
    encoding SQL_ASCII, binary results: nothing decoded; the fast check compares bytes;
    the caller's rollback undoes the SET). SQLite returns TEXT as str and a BLOB as bytes,
    so a value stored with the wrong storage class stands out by its Python type."""

    def __init__(self, connection, dialect: str) -> None:
        self.connection = connection  # a pooled DB-API connection; held so it stays open
        self.text_as_bytes = dialect == "postgresql"
        if self.text_as_bytes:
            cursor = connection.cursor()
            cursor.execute("SET client_encoding TO 'SQL_ASCII'")
            cursor.close()
            self.select = SELECT_ROWS + " WHERE seq >= %s AND seq <= %s ORDER BY seq"
            self.options = {"binary": True}
        else:
            self.select = SELECT_ROWS + " WHERE seq >= ? AND seq <= ? ORDER BY seq"
            self.options = {}

    def batches(self, start: int, end: int) -> Iterable[Sequence[tuple]]:
        cursor = self.connection.cursor()
        try:
            cursor.execute(self.select, (start, end), **self.options)
            while batch := cursor.fetchmany(FETCH_BATCH):
                yield batch
        finally:
            cursor.close()


class _MemoryRows:
    text_as_bytes = False

    def __init__(self, rows: Sequence[tuple]) -> None:
        self.rows = rows

    def batches(self, start: int, end: int) -> Iterable[Sequence[tuple]]:
        lo = bisect_left(self.rows, start, key=itemgetter(0))
        hi = bisect_left(self.rows, end + 1, key=itemgetter(0), lo=lo)
        for i in range(lo, hi, FETCH_BATCH):
            yield self.rows[i : min(i + FETCH_BATCH, hi)]


def _open_database_source(url: str) -> None:
    global _SOURCE
    engine = create_engine(url, poolclass=NullPool)
    _SOURCE = _DatabaseRows(engine.raw_connection(), engine.dialect.name)


def _run_chunk(task: tuple) -> _Chunk:
    start, end, sizes, merkle, deep = task
    return _check_rows(
        _SOURCE.batches(start, end), start, end, sizes, merkle, deep, _SOURCE.text_as_bytes
    )


# --- the parent: plan chunks, run them, judge ---------------------------------------------


@dataclass
class _Snapshot:
    head_seq: int | None
    head_hash: bytes | None
    head_frontier: bytes | None
    strays: list[tuple]  # (seq, body) of rows outside 1..H
    checkpoints: list[Checkpoint]
    pending: int = 0  # rows in audit_queue


def verify_chain(
    engine: Engine,
    *,
    check_checkpoints: bool = True,
    public_key_pem: bytes | str | None = None,
    deep: bool = False,
    workers: int = 1,
    chunk_size: int = DEFAULT_CHUNK,
) -> VerifyResult:
    """Verify the audit trail in ``engine``'s database (see the module docstring). Reads
    through its own connection and never writes; safe beside concurrent appends."""
    raw = engine.raw_connection()
    try:
        dialect = engine.dialect.name
        snapshot = _read_snapshot(raw.driver_connection, dialect)
        options = {
            "check_checkpoints": check_checkpoints,
            "public_key_pem": public_key_pem,
            "deep": deep,
            "workers": workers,
            "chunk_size": chunk_size,
        }
        url = engine.url.render_as_string(hide_password=False)
        in_memory = dialect == "sqlite" and engine.url.database in (None, "", ":memory:")
        if workers > 1 and (snapshot.head_seq or 0) > chunk_size and not in_memory:
            raw.rollback()  # no transaction open across fork(); rows 1..H never change
            return _verify(snapshot, None, url, **options)
        return _verify(snapshot, _DatabaseRows(raw, dialect), None, **options)
    finally:
        try:
            raw.rollback()
        finally:
            raw.close()


def verify_rows(
    rows: Sequence[tuple],
    *,
    head_seq: int,
    head_hash: bytes,
    head_frontier: bytes | None = None,
    checkpoints: Sequence[Checkpoint] = (),
    public_key_pem: bytes | str | None = None,
    deep: bool = False,
    chunk_size: int = DEFAULT_CHUNK,
) -> VerifyResult:
    """Verify rows already in memory, in this process: tuples in EVENT_COLUMNS order as
    the database driver returns them (text as str), sorted by seq. The Merkle checks run
    when a head frontier or checkpoints are given."""
    in_range = [row for row in rows if isinstance(row[0], int) and 1 <= row[0] <= head_seq]
    strays = [
        (row[0], row[8])
        for row in rows
        if not (isinstance(row[0], int) and 1 <= row[0] <= head_seq)
    ]
    return _verify(
        _Snapshot(head_seq, head_hash, head_frontier, strays, list(checkpoints)),
        _MemoryRows(in_range),
        None,
        check_checkpoints=head_frontier is not None or bool(checkpoints),
        public_key_pem=public_key_pem,
        deep=deep,
        workers=1,
        chunk_size=chunk_size,
    )


def _read_snapshot(dbapi, dialect: str) -> _Snapshot:
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
        strays_query = "SELECT seq, body FROM audit_events WHERE seq < 1 OR seq > ? ORDER BY seq"
        if dialect == "postgresql":
            strays_query = strays_query.replace("?", "%s")
        cursor.execute(strays_query + " LIMIT 100", (head_seq,))
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
    return _Snapshot(
        head_seq, head_hash if head is not None else None, frontier, strays, checkpoints, pending
    )


def _verify(
    snapshot: _Snapshot,
    source,
    database_url: str | None,
    *,
    check_checkpoints: bool,
    public_key_pem: bytes | str | None,
    deep: bool,
    workers: int,
    chunk_size: int,
) -> VerifyResult:
    if chunk_size < 1 or chunk_size & (chunk_size - 1):
        raise ValueError("chunk_size must be a power of two")
    size = snapshot.head_seq or 0
    checkpoints = snapshot.checkpoints
    merkle = check_checkpoints

    def result(bad: int | None, code: str, message: str, checked: int = 0) -> VerifyResult:
        return VerifyResult(
            ok=False,
            length=size,
            head=snapshot.head_hash.hex() if snapshot.head_hash is not None else None,
            first_bad_seq=bad,
            reason=Reason(code, message),
            checkpoints_checked=checked,
            pending=snapshot.pending,
        )

    # Plan the chunks: [j*C + 1, (j+1)*C], and which checkpoint sizes fall in each.
    tasks = []
    for start in range(1, size + 1, chunk_size):
        end = min(start + chunk_size - 1, size)
        sizes = sorted(
            {cp.tree_size - (start - 1) for cp in checkpoints if start <= cp.tree_size <= end}
        )
        tasks.append((start, end, tuple(sizes) if merkle else (), merkle, deep))

    chunks = _run(tasks, source, database_url, workers)

    # Events: the first fault wins (chunks are in seq order; strays compete by their seq).
    candidates: list[tuple[int, str, str]] = []
    prev = GENESIS_HASH
    for (start, *_), chunk in zip(tasks, chunks, strict=True):
        if chunk.problem is None and chunk.first_prev != prev:
            candidates.append(
                (start, "prev_hash_mismatch", _link_message(start, prev, chunk.first_prev))
            )
            break
        if chunk.problem is not None:
            candidates.append(chunk.problem)
            break
        prev = chunk.last_hash
    for stray_seq, body in snapshot.strays:
        claimed = (_body_fields(body) or {}).get("seq")
        bad = claimed if isinstance(claimed, int) and 1 <= claimed <= size else size + 1
        if isinstance(stray_seq, int) and stray_seq > size:
            candidates.append(
                (bad, "rows_beyond_head", f"a row has seq {stray_seq} but the head is at {size}")
            )
        else:
            candidates.append((bad, "seq_out_of_range", f"a row has seq {stray_seq!r}"))
    if candidates:
        bad, code, message = min(candidates, key=itemgetter(0))
        return result(bad, code, message)

    if snapshot.head_hash is None:
        return result(None, "head_missing", "audit_chain_head has no row 1")
    if prev != snapshot.head_hash:
        return result(
            size,
            "head_mismatch",
            f"head hash {snapshot.head_hash.hex()} is not event {size}'s ({prev.hex()})",
        )

    checked = 0
    if merkle:
        key = load_public_key(public_key_pem) if public_key_pem is not None else None
        chunk_frontier: list[bytes] = []  # frontier over the roots of whole chunks
        previous_size, pending = 0, iter(checkpoints)
        cp = next(pending, None)
        while cp is not None and cp.tree_size == 0:
            if cp.root_hash != EMPTY_ROOT:
                return result(
                    1, "checkpoint_root_mismatch", "checkpoint of size 0 has a wrong root"
                )
            checked, cp = checked + 1, next(pending, None)
        for j, ((start, end, *_), chunk) in enumerate(zip(tasks, chunks, strict=True)):
            while cp is not None and cp.tree_size <= end:
                local = chunk.frontiers[cp.tree_size - (start - 1)]
                root = frontier_root(chunk_frontier + local)
                if root != cp.root_hash:
                    return result(
                        previous_size + 1,
                        "checkpoint_root_mismatch",
                        f"events {previous_size + 1}..{cp.tree_size} do not give the signed "
                        f"root of checkpoint {cp.tree_size} ({cp.root_hash.hex()}; computed "
                        f"{root.hex()})",
                        checked,
                    )
                previous_size, checked, cp = cp.tree_size, checked + 1, next(pending, None)
            if end - start + 1 == chunk_size:
                frontier_append(chunk_frontier, j, chunk.frontiers[chunk_size][0])
            else:
                chunk_frontier += chunk.frontiers[end - start + 1]
        if cp is not None:
            return result(
                size + 1,
                "checkpoint_beyond_head",
                f"a checkpoint signs {cp.tree_size} events but the chain has {size}",
                checked,
            )
        if (
            snapshot.head_frontier is not None
            and unpack_frontier_safe(snapshot.head_frontier, size) != chunk_frontier
        ):
            return result(
                None,
                "frontier_mismatch",
                "the head's Merkle frontier does not match the events",
                checked,
            )
        if key is not None:
            for cp in checkpoints:
                try:
                    verify_checkpoint(cp, key)
                except CheckpointError as exc:
                    return result(
                        None, f"checkpoint_{exc.code}", f"checkpoint {cp.tree_size}: {exc}", checked
                    )
    return VerifyResult(
        ok=True,
        length=size,
        head=snapshot.head_hash.hex(),
        checkpoints_checked=checked,
        pending=snapshot.pending,
    )


def unpack_frontier_safe(data: bytes, size: int) -> list[bytes] | None:
    try:
        return unpack_frontier(data, size)
    except ValueError:
        return None


def _run(tasks: list[tuple], source, database_url: str | None, workers: int) -> list[_Chunk]:
    """Run the chunk tasks here, or in worker processes that open their own connections to
    ``database_url``. Workers start from a forkserver, a clean single-threaded process:
    fork() of a threaded process (a web server) can hand the child a lock that another
    thread held, forever."""
    global _SOURCE
    if database_url is None or workers <= 1 or len(tasks) <= 1:
        previous, _SOURCE = _SOURCE, source
        try:
            return [_run_chunk(task) for task in tasks]
        finally:
            _SOURCE = previous
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["__main__", __name__])
    with ProcessPoolExecutor(
        max_workers=min(workers, len(tasks)),
        mp_context=context,
        initializer=_open_database_source,
        initargs=(database_url,),
    ) as pool:
        return list(pool.map(_run_chunk, tasks))
