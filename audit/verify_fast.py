"""The fast path of audit verification: the reference's verdict (audit.verify), reached by
checking rows in C-level batches, in chunks that verify independently, in worker processes.

The steps, and why each gives the reference's answer:

1. ``plan_chunks``: seq 1..H is cut into aligned chunks of ``chunk_size`` (a power of two)
   events, each a ChunkTask. Every row stores its ``prev_hash``, so a chunk needs no
   neighbour to be checked.
2. ``check_chunk``: each fetched batch of a chunk is checked whole by ``batch_ok``, with
   map/zip chains and no Python code per row. A batch that it fails, or cannot decide, is
   walked row by row with the reference's own check of one row (audit.verdict.row_fault),
   which names the fault. The chunk's first row is walked without its link: only the
   parent knows the hash before it.
3. ``run_chunks``: here, or in worker processes; each worker gets a WorkerJob (the database
   URL and its share of the tasks), opens its own connection and closes it when done.
4. ``chain_fault``: the parent meets the chunks in seq order as the reference meets rows:
   a chunk's first seq, then its first link, then the chunk's own fault; so the fault
   named does not depend on the chunk size or the number of workers.
5. ``checkpoint_fault``: the parent joins the chunks' Merkle subtrees into the root at each
   checkpoint's size and into the frontier of all H events; then come the head frontier
   and the signatures, as in the reference.
"""

from __future__ import annotations

import contextlib
import gc
import multiprocessing
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from hashlib import sha256
from itertools import chain
from operator import add, itemgetter
from typing import Any, Protocol

from sqlalchemy import Engine, create_engine
from sqlalchemy.pool import NullPool

from audit.checkpoints import Checkpoint, load_public_key
from audit.event import BODY_HEAD, BODY_TAIL
from audit.hashing import CHAIN_PREFIX, EMPTY_ROOT, GENESIS_HASH, LEAF_PREFIX
from audit.merkle import frontier_append, frontier_root, levels, prefix_frontier
from audit.verdict import (
    EVENT_COLUMNS,
    Fault,
    Row,
    Snapshot,
    VerifyResult,
    beyond_head_fault,
    first_fault,
    frontier_fault,
    gap_fault,
    head_fault,
    link_fault,
    root_fault,
    row_fault,
    signature_fault,
    stray_fault,
)

DEFAULT_CHUNK = 1 << 16
FETCH_BATCH = 8192
SELECT_ROWS = f"SELECT {', '.join(EVENT_COLUMNS)} FROM audit_events"  # noqa: S608 (constants)


@dataclass(frozen=True)
class ChunkTask:
    """Verify events ``start``..``end``. ``sizes``: the tree sizes, counted from the chunk's
    start, of the checkpoints that fall in it (the parent needs their frontiers)."""

    start: int
    end: int
    sizes: tuple[int, ...]
    merkle: bool
    deep: bool


@dataclass
class ChunkResult:
    """What one chunk told: its first row's seq and prev_hash (the parent checks that link),
    its first fault, the seq where its rows ran out before its end, its last hash, and the
    Merkle frontiers of its first ``n`` leaves, by ``n``."""

    first_seq: Any = None
    first_prev: Any = None
    fault: Fault | None = None
    ran_out_at: int | None = None
    last_hash: Any = None
    frontiers: dict[int, list[bytes]] = field(default_factory=dict)


@dataclass(frozen=True)
class WorkerJob:
    """All that one worker process does: read from ``database_url``, verify ``tasks``."""

    database_url: str
    tasks: tuple[ChunkTask, ...]


# --- 2. one chunk: batches checked whole, walked row by row only when that fails ------------

_sha = sha256
_digest = type(sha256()).digest
# The body frame with the text columns written raw between quotes (policy_version comes
# pre-quoted, being nullable). It is the canonical frame (audit.event) exactly when no
# column holds a character that canonical JSON escapes: `"`, a backslash or U+0000..U+001F.
_RAW_HEAD = BODY_HEAD.replace("%s", '"%s"')
_RAW_TAIL = BODY_TAIL.replace('"resource":%s', '"resource":"%s"').replace(
    '"tenant":%s,"ts":%s', '"tenant":"%s","ts":"%s"'
)
_ESCAPED = ('"', "\\", *map(chr, range(0x20)))  # what canonical JSON writes escaped
# per type of the text columns: head and tail formats, empty, double quote, null, escaped
_FRAMES: dict[type, tuple[Any, ...]] = {
    bytes: (
        _RAW_HEAD.encode(),
        _RAW_TAIL.encode(),
        b"",
        b'"',
        b"null",
        tuple(c.encode() for c in _ESCAPED),
    ),
    str: (_RAW_HEAD, _RAW_TAIL, "", '"', "null", _ESCAPED),
}
_TEXT = (1, 2, 3, 4, 5, 6)  # ts, actor, tenant, action, resource, decision


def batch_ok(cols: tuple[tuple[Any, ...], ...], start: int, prev: Any) -> bool:
    """True only if every row of the batch (as columns) passes the reference's row check;
    False means "walk it row by row". ``prev``: the hash the first row must link to."""
    try:
        return _links_hold(cols, start, prev) and _frames_hold(cols)
    except (KeyError, TypeError, AttributeError, UnicodeEncodeError):
        return False  # a value of an unexpected type: the walk names it


def _links_hold(cols: tuple[tuple[Any, ...], ...], start: int, prev: Any) -> bool:
    seqs, bodies, prevs, hashes = cols[0], cols[8], cols[9], cols[10]
    if seqs != tuple(range(start, start + len(seqs))):
        return False
    if prevs[0] != prev or prevs[1:] != hashes[:-1]:
        return False
    chained = map(_digest, map(_sha, map(add, map(CHAIN_PREFIX.__add__, prevs), bodies)))
    return tuple(chained) == hashes


def _frames_hold(cols: tuple[tuple[Any, ...], ...]) -> bool:
    seqs, tss, actors, tenants, actions, resources, decisions, versions, bodies = cols[:9]
    kind = type(actors[0])
    head_fmt, tail_fmt, empty, dq, null, escaped = _FRAMES[kind]
    text = empty.join(chain(*(cols[i] for i in _TEXT)))
    quoted = {v: null if v is None else dq + v + dq for v in set(versions)}
    if any(c in text or any(c in v for v in quoted if v is not None) for c in escaped):
        return False  # one search per character: each runs at memchr speed
    heads = map(head_fmt.__mod__, zip(actions, actors, decisions, strict=True))
    tails = map(
        tail_fmt.__mod__,
        zip(map(quoted.__getitem__, versions), resources, seqs, tenants, tss, strict=True),
    )
    if kind is str:  # the body is bytes
        heads, tails = map(str.encode, heads), map(str.encode, tails)
    return all(map(bytes.startswith, bodies, heads)) and all(map(bytes.endswith, bodies, tails))


def walk(
    batch: Sequence[Row], expected: int, last: Any, deep: bool, text_as_bytes: bool
) -> Fault | None:
    """The reference's check of each row in turn; ``last`` None: the batch opens a chunk,
    and its first row's link is the parent's to check."""
    for raw_row in batch:
        row = _as_text(raw_row) if text_as_bytes else raw_row
        fault = row_fault(row, expected, last, deep)
        if fault is not None:
            return fault
        last, expected = row[10], expected + 1
    return None


def _as_text(row: Row) -> Row:
    """A row with its text columns as str (PostgreSQL sends them as UTF-8 bytes)."""
    out = list(row)
    for i in range(1, 8):
        if isinstance(out[i], bytes):
            with contextlib.suppress(UnicodeDecodeError):  # else bytes: a column mismatch
                out[i] = out[i].decode("utf-8")
    return tuple(out)


def check_chunk(task: ChunkTask, source: RowSource) -> ChunkResult:
    gc_was_on = gc.isenabled()
    gc.disable()  # nothing here makes cycles, and the batches would trigger full passes
    try:
        return _check_batches(task, source.batches(task.start, task.end), source.text_as_bytes)
    finally:
        if gc_was_on:
            gc.enable()


def _check_batches(
    task: ChunkTask, batches: Iterable[Sequence[Row]], text_as_bytes: bool
) -> ChunkResult:
    out = ChunkResult()
    leaves: list[bytes] = []
    expected, last = task.start, None
    for batch in batches:
        cols = tuple(zip(*batch, strict=True))
        if expected == task.start:
            out.first_seq, out.first_prev = cols[0][0], cols[9][0]
        link = out.first_prev if last is None else last
        if task.deep or not batch_ok(cols, expected, link):
            out.fault = walk(batch, expected, last, task.deep, text_as_bytes)
            if out.fault is not None:
                return out
        if task.merkle:
            leaves += map(_digest, map(_sha, map(LEAF_PREFIX.__add__, cols[8])))
        expected += len(batch)
        last = cols[10][-1]
    if expected != task.end + 1:
        out.ran_out_at = expected
        return out
    out.last_hash = last
    if task.merkle:
        tree = levels(leaves)
        out.frontiers = {size: prefix_frontier(tree, size) for size in (*task.sizes, len(leaves))}
    return out


# --- sources of rows: a database connection, or a list in memory ------------------------------


class RowSource(Protocol):
    text_as_bytes: bool

    def batches(self, start: int, end: int) -> Iterable[Sequence[Row]]: ...


class DatabaseRows:
    """Rows from a DB-API connection. PostgreSQL sends text as raw UTF-8 bytes (client
    encoding SQL_ASCII, binary results: nothing decoded; the fast check compares bytes;
    the caller's rollback undoes the SET). SQLite returns TEXT as str and a BLOB as bytes,
    so a value stored with the wrong storage class stands out by its Python type."""

    def __init__(self, connection: Any, dialect: str) -> None:
        self.connection = connection  # a DB-API connection; held so that it stays open
        self.text_as_bytes = dialect == "postgresql"
        self.options: dict[str, Any] = {}
        if self.text_as_bytes:
            cursor = connection.cursor()
            cursor.execute("SET client_encoding TO 'SQL_ASCII'")
            cursor.close()
            self.select = SELECT_ROWS + " WHERE seq >= %s AND seq <= %s ORDER BY seq"
            self.options = {"binary": True}
        else:
            self.select = SELECT_ROWS + " WHERE seq >= ? AND seq <= ? ORDER BY seq"

    def batches(self, start: int, end: int) -> Iterator[Sequence[Row]]:
        cursor = self.connection.cursor()
        try:
            cursor.execute(self.select, (start, end), **self.options)
            while batch := cursor.fetchmany(FETCH_BATCH):
                yield batch
        finally:
            cursor.close()


class MemoryRows:
    """Rows of seq 1..H held in memory, sorted by seq."""

    text_as_bytes = False

    def __init__(self, rows: Sequence[Row]) -> None:
        self.rows = rows

    def batches(self, start: int, end: int) -> Iterator[Sequence[Row]]:
        lo = bisect_left(self.rows, start, key=itemgetter(0))
        hi = bisect_left(self.rows, end + 1, key=itemgetter(0), lo=lo)
        for i in range(lo, hi, FETCH_BATCH):
            yield self.rows[i : min(i + FETCH_BATCH, hi)]


# --- 1, 3: plan the chunks and run them -----------------------------------------------------


def plan_chunks(
    size: int, chunk_size: int, checkpoints: Sequence[Checkpoint], merkle: bool, deep: bool
) -> list[ChunkTask]:
    """Chunks [j*C + 1, (j+1)*C] of 1..size, each with the checkpoint sizes inside it."""
    tasks = []
    for start in range(1, size + 1, chunk_size):
        end = min(start + chunk_size - 1, size)
        inside = {cp.tree_size - (start - 1) for cp in checkpoints if start <= cp.tree_size <= end}
        tasks.append(ChunkTask(start, end, tuple(sorted(inside)) if merkle else (), merkle, deep))
    return tasks


def run_chunks(
    tasks: list[ChunkTask], rows: RowSource | str, workers: int = 1
) -> list[ChunkResult]:
    """Run the tasks here over ``rows``, or, given a database URL, in ``workers`` worker
    processes that take every workers-th task each. Workers start from a forkserver, a clean
    single-threaded process: fork() of a threaded process (a web server) can hand the child
    a lock that another thread held, forever."""
    if not isinstance(rows, str):
        return [check_chunk(task, rows) for task in tasks]
    count = max(1, min(workers, len(tasks)))
    jobs = [WorkerJob(rows, tuple(tasks[w::count])) for w in range(count)]
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["__main__", __name__])
    with ProcessPoolExecutor(max_workers=count, mp_context=context) as pool:
        shares = list(pool.map(run_worker_job, jobs))
    return [shares[i % count][i // count] for i in range(len(tasks))]


def run_worker_job(job: WorkerJob) -> list[ChunkResult]:
    """In a worker process: a connection of its own for its chunks, closed after them."""
    engine: Engine = create_engine(job.database_url, poolclass=NullPool)
    connection = engine.raw_connection()
    try:
        source = DatabaseRows(connection, engine.dialect.name)
        return [check_chunk(task, source) for task in job.tasks]
    finally:
        connection.close()
        engine.dispose()


# --- 4, 5: the parent judges ------------------------------------------------------------------


def chain_fault(
    tasks: Sequence[ChunkTask], results: Sequence[ChunkResult]
) -> tuple[Fault | None, Any]:
    """The first fault of events 1..H as the reference meets them, row after row, and the
    hash of the last event (genesis for none)."""
    prev: Any = GENESIS_HASH
    for i, (task, chunk) in enumerate(zip(tasks, results, strict=True)):
        if chunk.first_seq == task.start and chunk.first_prev != prev:
            return link_fault(task.start, prev, chunk.first_prev), prev
        if chunk.fault is not None:
            return chunk.fault, prev
        if chunk.ran_out_at is not None:
            later = (c.first_seq for c in results[i + 1 :] if c.first_seq is not None)
            return gap_fault(chunk.ran_out_at, next(later, None)), prev
        prev = chunk.last_hash
    return None, prev


def checkpoint_fault(
    tasks: Sequence[ChunkTask],
    results: Sequence[ChunkResult],
    checkpoints: Sequence[Checkpoint],
    size: int,
    chunk_size: int,
) -> tuple[Fault | None, int, list[bytes]]:
    """Each checkpoint (in tree-size order) against the root of the events up to its size,
    built from whole chunks' roots and a part of one chunk; the first that fails, how many
    matched, and the frontier of all the events."""
    frontier: list[bytes] = []  # over the roots of whole chunks, then the last chunk's part
    previous, checked = 0, 0
    pending = iter(checkpoints)
    cp = next(pending, None)
    while cp is not None and cp.tree_size == 0:
        if cp.root_hash != EMPTY_ROOT:
            return root_fault(previous, cp, EMPTY_ROOT), checked, frontier
        checked, cp = checked + 1, next(pending, None)
    for j, (task, chunk) in enumerate(zip(tasks, results, strict=True)):
        while cp is not None and cp.tree_size <= task.end:
            computed = frontier_root(frontier + chunk.frontiers[cp.tree_size - (task.start - 1)])
            if computed != cp.root_hash:
                return root_fault(previous, cp, computed), checked, frontier
            previous, checked, cp = cp.tree_size, checked + 1, next(pending, None)
        length = task.end - task.start + 1
        if length == chunk_size:
            frontier_append(frontier, j, chunk.frontiers[chunk_size][0])
        else:
            frontier += chunk.frontiers[length]
    if cp is not None:
        return beyond_head_fault(cp, size), checked, frontier
    return None, checked, frontier


def verify_snapshot(
    snapshot: Snapshot,
    rows: RowSource | str,
    *,
    check_checkpoints: bool,
    public_key_pem: bytes | str | None,
    deep: bool,
    workers: int = 1,
    chunk_size: int = DEFAULT_CHUNK,
) -> VerifyResult:
    """The verdict on ``snapshot`` and its rows 1..H: read from ``rows`` here, or from the
    database at that URL in worker processes. Same order of checks as the reference."""
    if chunk_size < 1 or chunk_size & (chunk_size - 1):
        raise ValueError("chunk_size must be a power of two")
    size = snapshot.head_seq
    tasks = plan_chunks(size, chunk_size, snapshot.checkpoints, check_checkpoints, deep)
    results = run_chunks(tasks, rows, workers)
    fault, last_hash = chain_fault(tasks, results)
    fault = first_fault([fault, *(stray_fault(seq, body, size) for seq, body in snapshot.strays)])
    if fault is None:
        fault = head_fault(snapshot, last_hash)
    if fault is not None:
        return snapshot.failed(fault)
    if not check_checkpoints:
        return snapshot.passed(0)
    key = load_public_key(public_key_pem) if public_key_pem is not None else None
    fault, checked, frontier = checkpoint_fault(
        tasks, results, snapshot.checkpoints, size, chunk_size
    )
    if fault is None:
        fault = frontier_fault(snapshot, frontier)
    if fault is None and key is not None:
        fault = signature_fault(snapshot.checkpoints, key)
    return snapshot.passed(checked) if fault is None else snapshot.failed(fault, checked)


def verify_database(
    engine: Engine,
    connection: Any,
    snapshot: Snapshot,
    *,
    check_checkpoints: bool,
    public_key_pem: bytes | str | None,
    deep: bool,
    workers: int,
    chunk_size: int,
) -> VerifyResult:
    """verify_snapshot over the rows behind ``connection`` (a pooled DB-API connection of
    ``engine`` that read ``snapshot``): through it, or through worker processes' own
    connections when ``workers > 1`` and there is more than one chunk."""
    dialect = engine.dialect.name
    in_memory = dialect == "sqlite" and engine.url.database in (None, "", ":memory:")
    rows: RowSource | str
    if workers > 1 and snapshot.head_seq > chunk_size and not in_memory:
        connection.rollback()  # no transaction open across fork(); rows 1..H never change
        rows = engine.url.render_as_string(hide_password=False)
    else:
        rows = DatabaseRows(connection, dialect)
    return verify_snapshot(
        snapshot,
        rows,
        check_checkpoints=check_checkpoints,
        public_key_pem=public_key_pem,
        deep=deep,
        workers=workers,
        chunk_size=chunk_size,
    )
