"""The witness's own small database: one row per log (origin -> the latest checkpoint it
cosigned). Not the gateway's schema: the witness creates its table itself.

``save`` is the witness's atomic check-and-save, group-committed. Requests whose log
signature has been verified (audit.witness.verify_request, in the callers' threads) queue
here; one writer thread takes every request waiting and, in ONE transaction, reads the
state of each log the batch names, decides each request in arrival order with
``check_against`` (a later request for the same log sees the earlier one's new state),
writes each changed log once, and commits: one fsync for the whole batch. Each caller is
answered only after that commit, refusals included (a 409 names a size that is on disk).
While the writer waits on the disk, the next batch gathers, so the disk's fsync rate
bounds batches per second, not checkpoints per second.

Several witness processes on one database stay correct: on SQLite the transaction holds
the write lock from its start (BEGIN IMMEDIATE), on PostgreSQL the rows are read FOR
UPDATE (in origin order, so two processes cannot deadlock) and a first sight that loses
an INSERT race redoes the batch against the winner's row."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from typing import Any

import structlog
from sqlalchemy import (
    BigInteger,
    Column,
    Engine,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    event,
    select,
)

from audit.witness import LogState, Verified, WitnessRefusal, check_against
from gateway.db import make_engine

log = structlog.get_logger()

metadata = MetaData()

witness_logs = Table(
    "witness_logs",
    metadata,
    Column("origin", String(512), primary_key=True),
    Column("size", BigInteger, nullable=False),
    Column("root", LargeBinary(32), nullable=False),
    Column("checkpoint", Text, nullable=False),
)

_GET = "SELECT size, root, checkpoint FROM witness_logs WHERE origin = ?"
_READ = "SELECT origin, size, root, checkpoint FROM witness_logs WHERE origin IN"  # (...)
_INSERT = (
    "INSERT INTO witness_logs (origin, size, root, checkpoint) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (origin) DO NOTHING"
)
# The WHERE on the old size and root can only fail if another process changed the row
# after this transaction read it, which its lock forbids: a guard, never the decision.
_UPDATE = (
    "UPDATE witness_logs SET size = ?, root = ?, checkpoint = ? "
    "WHERE origin = ? AND size = ? AND root = ?"
)
MAX_BATCH = 1024  # requests per transaction
_ATTEMPTS = 3  # of a batch that lost a first-sight INSERT race (PostgreSQL)

Outcome = LogState | BaseException
Done = Callable[[Outcome], None]


def _synchronous_full(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.close()


class _LostRace(Exception):
    """Another process inserted a log's first row after this batch read none."""


class SqlStore:
    """audit.witness.Store over SQLAlchemy (SQLite file by default, PostgreSQL works).

    The hot path uses one DB-API connection that the writer thread keeps (as audit.chain
    goes straight to the driver): no pool checkout, and the driver's statement cache
    holds the few fixed statements."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        metadata.create_all(engine)
        self._sqlite = engine.dialect.name == "sqlite"
        mark = "?" if engine.dialect.paramstyle == "qmark" else "%s"
        # Fixed SQL; only the placeholder style varies with the driver.
        self._mark = mark
        self._get = _GET.replace("?", mark)
        self._insert = _INSERT.replace("?", mark)
        self._update = _UPDATE.replace("?", mark)
        self._pending: list[tuple[Verified, Done]] = []
        self._wake = threading.Condition()
        self._writer: threading.Thread | None = None
        self._closing = False
        self._raw: Any = None  # the writer's connection (a pool connection it keeps)
        self.batches = 0  # committed transactions, and the requests they decided
        self.decided = 0

    @classmethod
    def open(cls, database_url: str, *, durable: bool = True) -> SqlStore:
        """``durable``: on SQLite, fsync every commit (WAL with synchronous=FULL), since the
        spec says a witness persists the checkpoint before it answers; a witness that lost
        its last state to a power cut could cosign a fork of what it already cosigned."""
        engine = make_engine(database_url, pool_size=4, max_overflow=8)
        if durable and engine.dialect.name == "sqlite":
            event.listen(engine, "connect", _synchronous_full)
        return cls(engine)

    # --- reads ---------------------------------------------------------------------------

    def get(self, origin: str) -> LogState | None:
        raw = self.engine.raw_connection()
        try:
            cursor = raw.cursor()
            cursor.execute(self._get, (origin,))
            row = cursor.fetchone()
            cursor.close()
            if not self._sqlite:
                raw.rollback()  # end the read's transaction
        finally:
            raw.close()
        return None if row is None else LogState(origin, int(row[0]), bytes(row[1]), str(row[2]))

    def all(self) -> list[LogState]:
        with self.engine.connect() as connection:
            rows = connection.execute(select(witness_logs)).all()
        return [LogState(r.origin, int(r.size), bytes(r.root), str(r.checkpoint)) for r in rows]

    # --- the atomic check-and-save -------------------------------------------------------

    def submit(self, verified: Verified, done: Done) -> None:
        """Queue ``verified``; ``done`` is called from the writer thread, after the commit,
        with the saved state or the refusal (or the store's error)."""
        self._enqueue([(verified, done)])

    def _enqueue(self, items: list[tuple[Verified, Done]]) -> None:
        with self._wake:
            if self._closing:
                raise WitnessRefusal(503, "witness_closing", "the witness is shutting down")
            if self._writer is None:
                self._writer = threading.Thread(
                    target=self._write_loop, name="witness-store-writer", daemon=True
                )
                self._writer.start()
            self._pending.extend(items)
            self._wake.notify()

    def save_all(self, batch: list[Verified]) -> list[Outcome]:
        """Queue ``batch`` at once, so it is decided in its order in one transaction (up to
        MAX_BATCH requests); the saved state or the refusal of each, after the commit."""
        finished = threading.Event()
        outcomes: dict[int, Outcome] = {}

        def done_for(i: int) -> Done:
            def done(outcome: Outcome) -> None:
                outcomes[i] = outcome
                if len(outcomes) == len(batch):
                    finished.set()

            return done

        if not batch:
            return []
        self._enqueue([(verified, done_for(i)) for i, verified in enumerate(batch)])
        finished.wait()
        return [outcomes[i] for i in range(len(batch))]

    def save(self, verified: Verified) -> LogState:
        """audit.witness.Store.save: blocks until the batch holding it is committed."""
        finished = threading.Event()
        box: list[Outcome] = []

        def done(outcome: Outcome) -> None:
            box.append(outcome)
            finished.set()

        self.submit(verified, done)
        finished.wait()
        return _result(box[0])

    async def save_async(self, verified: Verified) -> LogState:
        """``save`` for an event loop: awaits the commit without holding a thread."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Outcome] = loop.create_future()

        def done(outcome: Outcome) -> None:
            loop.call_soon_threadsafe(_settle, future, outcome)

        self.submit(verified, done)
        return _result(await future)

    def _write_loop(self) -> None:
        while True:
            with self._wake:
                while not self._pending and not self._closing:
                    self._wake.wait()
                if not self._pending:
                    return
                batch = self._pending[:MAX_BATCH]
                del self._pending[:MAX_BATCH]
            outcomes = self._decide_and_commit([verified for verified, _done in batch])
            for (_verified, done), outcome in zip(batch, outcomes, strict=True):
                try:
                    done(outcome)
                except Exception:  # a caller's loop that is gone: the writer goes on
                    log.exception("witness.answer_failed")

    def _decide_and_commit(self, batch: list[Verified]) -> list[Outcome]:
        """One transaction for the batch; every outcome is final only once it commits."""
        for _attempt in range(_ATTEMPTS):
            try:
                outcomes = self._transaction(batch)
            except _LostRace as lost:
                log.info("witness.first_sight_race", statement=str(lost))
                continue
            except Exception as exc:
                self._drop_connection()
                log.exception("witness.store_failed", requests=len(batch))
                message = f"store unavailable: {type(exc).__name__}"
                return [WitnessRefusal(503, "witness_store_error", message) for _ in batch]
            self.batches += 1
            self.decided += len(batch)
            return outcomes
        message = "concurrent first sights of a log; retry"
        return [WitnessRefusal(503, "witness_busy", message) for _ in batch]

    def _transaction(self, batch: list[Verified]) -> list[Outcome]:
        """Few statements whatever the batch's size (BEGIN, one SELECT, one or two
        executemany, COMMIT): each one gives the GIL up and must win it back from the
        callers' threads."""
        raw = self._connection()
        cursor = raw.cursor()
        try:
            if self._sqlite:
                cursor.execute("BEGIN IMMEDIATE")
            read = self._read(cursor, sorted({v.origin for v in batch}))
            changed: dict[str, LogState] = {}
            outcomes: list[Outcome] = []
            for verified in batch:
                origin = verified.origin
                try:
                    state = check_against(verified, changed.get(origin) or read.get(origin))
                except WitnessRefusal as refusal:
                    outcomes.append(refusal)
                    continue
                changed[origin] = state
                outcomes.append(state)
            self._write(cursor, read, changed)  # each log once, with its last state
            if self._sqlite:
                cursor.execute("COMMIT")
            else:
                raw.commit()
            return outcomes
        except BaseException:
            self._rollback(raw, cursor)
            raise
        finally:
            cursor.close()

    def _read(self, cursor: Any, origins: list[str]) -> dict[str, LogState]:
        """The stored state of ``origins`` (sorted: PostgreSQL locks the rows in that
        order). The list is padded to a power of two, so few distinct statements reach
        the driver's statement cache."""
        padded = origins + origins[-1:] * ((1 << (len(origins) - 1).bit_length()) - len(origins))
        marks = ", ".join([self._mark] * len(padded))
        sql = f"{_READ} ({marks}) ORDER BY origin" + ("" if self._sqlite else " FOR UPDATE")
        cursor.execute(sql, padded)
        return {
            row[0]: LogState(row[0], int(row[1]), bytes(row[2]), str(row[3]))
            for row in cursor.fetchall()
        }

    def _write(self, cursor: Any, read: dict[str, LogState], changed: dict[str, LogState]) -> None:
        inserts = [
            (new.origin, new.size, new.root, new.note)
            for origin, new in changed.items()
            if origin not in read
        ]
        updates = [
            (new.size, new.root, new.note, origin, read[origin].size, read[origin].root)
            for origin, new in changed.items()
            if origin in read
        ]
        for statement, rows in ((self._insert, inserts), (self._update, updates)):
            if rows:
                cursor.executemany(statement, rows)
                if cursor.rowcount != len(rows):  # summed over the rows, by both drivers
                    raise _LostRace(statement.split()[0])

    def _connection(self) -> Any:
        if self._raw is None:
            self._raw = self.engine.raw_connection()
        return self._raw

    def _rollback(self, raw: Any, cursor: Any) -> None:
        with contextlib.suppress(Exception):
            if self._sqlite:
                cursor.execute("ROLLBACK")
            else:
                raw.rollback()

    def _drop_connection(self) -> None:
        raw, self._raw = self._raw, None
        if raw is not None:
            with contextlib.suppress(Exception):
                raw.invalidate()

    def close(self) -> None:
        """Answer what is queued, then stop the writer and close the connections."""
        with self._wake:
            self._closing = True
            self._wake.notify()
            writer = self._writer
        if writer is not None:
            writer.join(timeout=30)
        if self._raw is not None:
            with contextlib.suppress(Exception):
                self._raw.close()
            self._raw = None
        self.engine.dispose()


def _result(outcome: Outcome) -> LogState:
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome


def _settle(future: asyncio.Future[Outcome], outcome: Outcome) -> None:
    if not future.done():  # a caller that went away (cancelled) is not answered
        future.set_result(outcome)
