"""The audit chain: events recorded in the caller's transaction, chained in order.

Two ways in, one chaining core (``chain_events``), so both write byte-identical rows:

- ``enqueue(session, ...)`` validates an event and inserts it into ``audit_queue`` in the
  caller's transaction. It takes no lock, so writers commit side by side (on PostgreSQL
  they share group commits). ``sequence(engine)``, run by a background ``AuditSequencer``
  (audit.sequencer) and by ``flush`` before reads, chains queued rows in id order in a
  transaction of its own and deletes them in that same transaction, so a row is chained
  exactly once however many sequencers run. This is what the gateway uses. An event
  keeps the ``ts`` it was enqueued with, so ``ts`` follows ``seq`` only roughly (events
  from transactions that commit out of step are chained in the order they committed).
- ``append(session, ...)`` chains one event directly in the caller's transaction. It
  holds the chain head lock until the caller commits, so appends go one at a time
  (across the WAL flush of each commit on PostgreSQL).

Chaining locks the chain head row (``audit_chain_head``, id=1: ``SELECT ... FOR UPDATE``
on PostgreSQL; on SQLite the engine from gateway.db makes every transaction ``BEGIN
IMMEDIATE``, which already holds the write lock), so concurrent chainers form one chain
with no forks and no gaps. The head's ``UPDATE`` also names the seq it read, and the
event's ``seq`` is the primary key, so even an engine without those locks fails loudly
rather than forking. On PostgreSQL the transaction must be READ COMMITTED (the default;
``sequence`` sets it), so that the locking read sees the newest head.

Each chained event writes one ``audit_events`` row, moves the head (seq, hash, Merkle
frontier), adds a row to ``audit_tree_nodes`` when it completes a subtree of 256 leaves
or more, and, given a signer, signs a checkpoint when the size reaches a multiple of
``checkpoint_every`` (dated with that event's ``ts``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from operator import itemgetter

from sqlalchemy import Connection, Engine
from sqlmodel import Session

from audit.checkpoints import Checkpoint, Signer
from audit.encoding import now_ts
from audit.event import InvalidEventError, check_event, encode_details, event_body
from audit.hashing import chain_hash, leaf_hash
from audit.merkle import frontier_append, frontier_root, pack_frontier, unpack_frontier

STORED_NODE_LEVEL = 8  # audit_tree_nodes keeps subtrees of 2**8 leaves and up
DEFAULT_MAX_BATCH = 1000
DEFAULT_MAX_BATCHES = 100


class ChainError(RuntimeError):
    """The chain head is missing or moved under us (an engine without the head lock), or
    a queued row cannot be chained."""


@dataclass(frozen=True)
class Appended:
    seq: int
    ts: str
    hash: bytes
    checkpoint: Checkpoint | None = None


@dataclass(frozen=True)
class Head:
    seq: int
    hash: bytes
    frontier: list[bytes]

    @property
    def root(self) -> bytes:
        return frontier_root(self.frontier)


@dataclass(frozen=True)
class EventRecord:
    """A checked event, ready to chain: every field as stored, details as canonical JSON."""

    ts: str
    actor: str
    tenant: str
    action: str
    resource: str
    decision: str
    policy_version: str | None
    details_json: str


_SQL = {
    "lock_head": "SELECT seq, hash, frontier FROM audit_chain_head WHERE id = 1",
    "read_head": "SELECT seq, hash, frontier FROM audit_chain_head WHERE id = 1",
    "insert_event": (
        "INSERT INTO audit_events (seq, ts, actor, tenant, action, resource, decision, "
        "policy_version, body, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    ),
    "insert_node": "INSERT INTO audit_tree_nodes (level, idx, hash) VALUES (?, ?, ?)",
    "update_head": (
        "UPDATE audit_chain_head SET seq = ?, hash = ?, frontier = ? WHERE id = 1 AND seq = ?"
    ),
    "insert_checkpoint": (
        "INSERT INTO audit_checkpoints (tree_size, root_hash, ts, key_id, signature) "
        "VALUES (?, ?, ?, ?, ?)"
    ),
    "enqueue": (
        "INSERT INTO audit_queue (ts, actor, tenant, action, resource, decision, "
        "policy_version, details) VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id"
    ),
    # One statement takes the oldest rows out and hands them back: what it returns is
    # exactly what it deleted, so no row can be chained twice or dropped unchained.
    "dequeue": (
        "DELETE FROM audit_queue WHERE id IN (SELECT id FROM audit_queue ORDER BY id LIMIT ?) "
        "RETURNING id, ts, actor, tenant, action, resource, decision, policy_version, details"
    ),
    "count_queue": "SELECT count(*) FROM audit_queue",
    "peek_queue": "SELECT 1 FROM audit_queue LIMIT 1",
}


@cache
def sql(dialect: str, name: str) -> str:
    """Driver-level SQL for ``dialect``: qmark for sqlite3, format for psycopg."""
    text = _SQL[name]
    if dialect == "postgresql":
        text = text.replace("?", "%s")
        if name == "lock_head":
            text += " FOR UPDATE"
    return text


def driver_cursor(session: Session):
    """A DB-API cursor on the session's connection, inside its transaction."""
    connection = session.connection()
    return connection.dialect.name, connection.connection.cursor()


def event_record(
    *,
    actor: str,
    tenant: str,
    action: str,
    resource: str,
    decision: str,
    policy_version: str | None = None,
    details: Mapping | None = None,
    ts: str | None = None,
) -> EventRecord:
    """Check an event as given by a caller (raises InvalidEventError); ``ts`` defaults to
    now."""
    ts = now_ts() if ts is None else ts
    check_event(
        ts=ts,
        actor=actor,
        tenant=tenant,
        action=action,
        resource=resource,
        decision=decision,
        policy_version=policy_version,
    )
    return EventRecord(
        ts, actor, tenant, action, resource, decision, policy_version, encode_details(details)
    )


def queued_record(row: Sequence) -> EventRecord:
    """The event of an ``audit_queue`` row (as "dequeue" returns it), checked again as
    enqueue checked it: a row written around enqueue stops the sequencer, loudly, rather
    than entering the permanent chain malformed."""
    queue_id, ts, actor, tenant, action, resource, decision, policy_version, details = row
    try:
        check_event(
            ts=ts,
            actor=actor,
            tenant=tenant,
            action=action,
            resource=resource,
            decision=decision,
            policy_version=policy_version,
        )
        if not isinstance(details, str) or encode_details(json.loads(details)) != details:
            raise InvalidEventError("details are not the canonical JSON of an object")
    except (InvalidEventError, ValueError) as exc:
        raise ChainError(f"audit_queue row {queue_id} cannot be chained: {exc}") from None
    return EventRecord(ts, actor, tenant, action, resource, decision, policy_version, details)


def lock_head(cursor, dialect: str) -> Head:
    """The chain head, locked until the cursor's transaction ends."""
    cursor.execute(sql(dialect, "lock_head"))
    return _head(cursor.fetchone())


def _head(row) -> Head:
    if row is None:
        raise ChainError("audit_chain_head has no row 1: run the migrations")
    size = int(row[0])
    return Head(seq=size, hash=bytes(row[1]), frontier=unpack_frontier(bytes(row[2]), size))


def chain_events(
    cursor,
    dialect: str,
    head: Head,
    records: Sequence[EventRecord],
    *,
    signer: Signer | None = None,
    checkpoint_every: int | None = None,
) -> list[Appended]:
    """Chain ``records``, in order, after ``head`` (which the cursor's transaction has
    locked: lock_head), writing the events, the completed tree nodes and the due
    checkpoints, and moving the head. The one place events are chained: append and
    sequence both call it, so they write the same bytes."""
    _check_checkpoint_every(checkpoint_every)
    start, prev_hash, frontier = head.seq, head.hash, list(head.frontier)
    sign_every = checkpoint_every if signer is not None else None
    events: list[tuple] = []
    nodes: list[tuple[int, int, bytes]] = []
    checkpoints: list[Checkpoint] = []
    appended: list[Appended] = []

    def keep(level: int, index: int, node: bytes) -> None:
        if level >= STORED_NODE_LEVEL:
            nodes.append((level, index, node))

    for size, record in enumerate(records, start):
        seq = size + 1
        body = event_body(
            seq=seq,
            ts=record.ts,
            actor=record.actor,
            tenant=record.tenant,
            action=record.action,
            resource=record.resource,
            decision=record.decision,
            policy_version=record.policy_version,
            details_json=record.details_json,
        )
        digest = chain_hash(prev_hash, body)
        frontier_append(frontier, size, leaf_hash(body), keep)
        events.append(
            (
                seq,
                record.ts,
                record.actor,
                record.tenant,
                record.action,
                record.resource,
                record.decision,
                record.policy_version,
                body,
                prev_hash,
                digest,
            )
        )
        checkpoint = None
        if signer is not None and sign_every and seq % sign_every == 0:
            checkpoint = signer.sign(seq, frontier_root(frontier), record.ts)
            checkpoints.append(checkpoint)
        appended.append(Appended(seq=seq, ts=record.ts, hash=digest, checkpoint=checkpoint))
        prev_hash = digest
    if not events:
        return appended
    _execute_rows(cursor, sql(dialect, "insert_event"), events)
    _execute_rows(cursor, sql(dialect, "insert_node"), nodes)
    end = start + len(events)
    cursor.execute(sql(dialect, "update_head"), (end, prev_hash, pack_frontier(frontier), start))
    if cursor.rowcount != 1:
        raise ChainError(f"chain head moved while chaining seq {start + 1}..{end}")
    _execute_rows(
        cursor,
        sql(dialect, "insert_checkpoint"),
        [(c.tree_size, c.root_hash, c.ts, c.key_id, c.signature) for c in checkpoints],
    )
    return appended


def _check_checkpoint_every(checkpoint_every: int | None) -> None:
    if checkpoint_every is not None and checkpoint_every < 1:
        raise ValueError("checkpoint_every must be >= 1")


def _execute_rows(cursor, statement: str, rows: list[tuple]) -> None:
    if len(rows) == 1:
        cursor.execute(statement, rows[0])
    elif rows:
        cursor.executemany(statement, rows)


def append(
    session: Session,
    *,
    actor: str,
    tenant: str,
    action: str,
    resource: str,
    decision: str,
    policy_version: str | None = None,
    details: Mapping | None = None,
    ts: str | None = None,
    signer: Signer | None = None,
    checkpoint_every: int | None = None,
) -> Appended:
    """Chain one event in the session's transaction (never commits), holding the head
    lock until the caller's transaction ends: append last, then commit. ``ts`` defaults
    to now; tests pass one for fixed vectors. With ``signer`` and ``checkpoint_every``,
    the append that brings the size to a multiple of it also signs a checkpoint."""
    record = event_record(
        actor=actor,
        tenant=tenant,
        action=action,
        resource=resource,
        decision=decision,
        policy_version=policy_version,
        details=details,
        ts=ts,
    )
    _check_checkpoint_every(checkpoint_every)
    dialect, cursor = driver_cursor(session)
    try:
        head = lock_head(cursor, dialect)
        (appended,) = chain_events(
            cursor, dialect, head, [record], signer=signer, checkpoint_every=checkpoint_every
        )
    finally:
        cursor.close()
    return appended


def enqueue(
    session: Session,
    *,
    actor: str,
    tenant: str,
    action: str,
    resource: str,
    decision: str,
    policy_version: str | None = None,
    details: Mapping | None = None,
    ts: str | None = None,
) -> int:
    """Record one event in the session's transaction for the sequencer to chain; returns
    its queue id. Checks the event exactly as ``append`` does (a bad one raises
    InvalidEventError here, in the caller's transaction), takes no lock, never commits.
    ``ts`` (default now) is the event's time, kept as given when it is chained."""
    record = event_record(
        actor=actor,
        tenant=tenant,
        action=action,
        resource=resource,
        decision=decision,
        policy_version=policy_version,
        details=details,
        ts=ts,
    )
    dialect, cursor = driver_cursor(session)
    try:
        cursor.execute(
            sql(dialect, "enqueue"),
            (
                record.ts,
                record.actor,
                record.tenant,
                record.action,
                record.resource,
                record.decision,
                record.policy_version,
                record.details_json,
            ),
        )
        return int(cursor.fetchone()[0])
    finally:
        cursor.close()


def sequence(
    engine: Engine,
    *,
    signer: Signer | None = None,
    checkpoint_every: int | None = None,
    max_batch: int = DEFAULT_MAX_BATCH,
    max_batches: int | None = DEFAULT_MAX_BATCHES,
) -> int:
    """Chain queued events, oldest queue id first; returns how many. Each batch of up to
    ``max_batch`` rows is one transaction of its own: lock the head, take the rows out of
    the queue, chain them as ``append`` would, commit. Stops when a batch comes back
    short of ``max_batch`` (the queue was empty as that batch saw it) or after
    ``max_batches`` batches (None: no bound). Safe to run from many threads and
    processes at once: they take turns on the head lock."""
    if max_batch < 1:
        raise ValueError("max_batch must be >= 1")
    if max_batches is not None and max_batches < 1:
        raise ValueError("max_batches must be >= 1")
    _check_checkpoint_every(checkpoint_every)
    total, batches = 0, 0
    with engine.connect() as connection:
        if connection.dialect.name == "postgresql":
            connection.execution_options(isolation_level="READ COMMITTED")
        while (max_batches is None or batches < max_batches) and _queue_has_rows(connection):
            chained = _sequence_batch(connection, signer, checkpoint_every, max_batch)
            total, batches = total + chained, batches + 1
            if chained < max_batch:
                break
    return total


def _queue_has_rows(connection: Connection) -> bool:
    """A look through the DB-API connection, beside SQLAlchemy's transaction handling:
    on SQLite a bare SELECT takes no write lock (SQLAlchemy's BEGIN would be IMMEDIATE);
    on PostgreSQL it opens the transaction that the batch then goes on in. Saves an empty
    round its head lock and its commit (a WAL flush on PostgreSQL: a row lock is a
    write)."""
    dbapi_connection = connection.connection.dbapi_connection
    assert dbapi_connection is not None  # a live Connection holds one
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(sql(connection.dialect.name, "peek_queue"))
        return cursor.fetchone() is not None
    finally:
        cursor.close()


def _sequence_batch(
    connection: Connection, signer: Signer | None, checkpoint_every: int | None, max_batch: int
) -> int:
    with connection.begin():
        dialect = connection.dialect.name
        cursor = connection.connection.cursor()
        try:
            # Head first: the lock orders sequencers, and with it held the queue read
            # below (a new statement, so a fresh READ COMMITTED snapshot on PostgreSQL)
            # sees every row that the previous holder left.
            head = lock_head(cursor, dialect)
            cursor.execute(sql(dialect, "dequeue"), (max_batch,))
            rows = sorted(cursor.fetchall(), key=itemgetter(0))
            records = [queued_record(row) for row in rows]
            chain_events(
                cursor, dialect, head, records, signer=signer, checkpoint_every=checkpoint_every
            )
        finally:
            cursor.close()
    return len(rows)


def flush(
    engine: Engine,
    *,
    signer: Signer | None = None,
    checkpoint_every: int | None = None,
    max_batch: int = DEFAULT_MAX_BATCH,
) -> int:
    """Chain everything queued, with no bound on batches: after it returns, every event
    committed before the call is in the chain (read-your-writes for audit reads). Opens
    its own transactions: on SQLite, call it before the caller's session has begun one,
    or it waits on the caller's own write lock."""
    return sequence(
        engine,
        signer=signer,
        checkpoint_every=checkpoint_every,
        max_batch=max_batch,
        max_batches=None,
    )


def pending(session: Session) -> int:
    """Events queued and not yet chained, as this transaction sees them."""
    dialect, cursor = driver_cursor(session)
    try:
        cursor.execute(sql(dialect, "count_queue"))
        return int(cursor.fetchone()[0])
    finally:
        cursor.close()


def read_head(session: Session) -> Head:
    """The chain head as this transaction sees it (no lock)."""
    dialect, cursor = driver_cursor(session)
    try:
        cursor.execute(sql(dialect, "read_head"))
        row = cursor.fetchone()
    finally:
        cursor.close()
    return _head(row)


def sign_checkpoint(session: Session, signer: Signer) -> Checkpoint:
    """Sign and store a checkpoint of the tree as it stands now (in the caller's
    transaction; never commits)."""
    head = read_head(session)
    checkpoint = signer.sign(head.seq, head.root, now_ts())
    dialect, cursor = driver_cursor(session)
    try:
        _insert_checkpoint(cursor, dialect, checkpoint)
    finally:
        cursor.close()
    return checkpoint


def _insert_checkpoint(cursor, dialect: str, checkpoint: Checkpoint) -> None:
    cursor.execute(
        sql(dialect, "insert_checkpoint"),
        (
            checkpoint.tree_size,
            checkpoint.root_hash,
            checkpoint.ts,
            checkpoint.key_id,
            checkpoint.signature,
        ),
    )
