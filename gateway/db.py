"""The database: the one engine factory (SQLite gets WAL and a process-wide write lock),
read-only engines, and what runs once a request's transaction has ended."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from gateway.errors import ServiceUnavailable

log = structlog.get_logger()

SQLITE_BUSY_TIMEOUT_MS = 30_000
READ_ONLY_OPTION = "tunegate_read_only"
ON_COMMIT = "on_commit"
ON_ROLLBACK = "on_rollback"


def make_engine(database_url: str, **kwargs) -> Engine:
    """The one engine factory: SQLite gets WAL and write-locking transactions."""
    url = make_url(database_url)
    # Statement parameters are user data: keep them out of exception text and so logs.
    kwargs.setdefault("hide_parameters", True)
    if url.get_backend_name() != "sqlite":
        kwargs.setdefault("pool_pre_ping", True)
        return create_engine(url, **kwargs)

    if url.database and url.database != ":memory:":
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    kwargs.setdefault("connect_args", {}).setdefault("check_same_thread", False)
    engine = create_engine(url, **kwargs)
    install_sqlite_pragmas(engine)
    return engine


def install_sqlite_pragmas(engine: Engine) -> None:
    event.listen(engine, "connect", _set_pragmas)
    _serialise_writers(engine, _process_write_lock(engine.url.database or ":memory:"))


def _set_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # pysqlite's own transaction handling defers BEGIN until the first write, and a WAL
    # reader that later writes fails with SQLITE_BUSY_SNAPSHOT when another writer got
    # there first. Taking the write lock at BEGIN (IMMEDIATE) lets busy_timeout queue
    # writers instead, which is what serialises audit appends on the chain head.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.close()


def _serialise_writers(engine: Engine, writers: _WriteLock) -> None:
    """Within one process, writers queue on a Python lock rather than in SQLite's busy
    handler, which polls with sleeps of up to 100 ms: with dozens of threads waiting, the
    lock sat free while every waiter slept (a few dozen writes per second, seconds of tail
    latency). Across processes (workers) busy_timeout still arbitrates."""

    @event.listens_for(engine, "begin")
    def _on_begin(connection):
        if connection.get_execution_options().get(READ_ONLY_OPTION):
            connection.exec_driver_sql("BEGIN")
            return
        dbapi_connection = connection.connection.dbapi_connection
        writers.acquire(dbapi_connection)
        try:
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        except BaseException:
            writers.release_if_held_by(dbapi_connection)
            raise

    # These events fire before SQLAlchemy's own DBAPI call: end the transaction here
    # (that call then finds none open and does nothing), then let the next writer in.
    @event.listens_for(engine, "commit")
    def _on_commit(connection):
        dbapi_connection = connection.connection.dbapi_connection
        if not writers.held_by(dbapi_connection):
            return
        try:
            dbapi_connection.commit()
        except BaseException:
            dbapi_connection.rollback()
            raise
        finally:
            writers.release_if_held_by(dbapi_connection)

    @event.listens_for(engine, "rollback")
    def _on_rollback(connection):
        writers.end(connection.connection.dbapi_connection)

    # A connection can also leave its transaction without a Connection-level rollback:
    # returned to the pool by the garbage collector, invalidated, closed. Each path must
    # let the lock go, or every later writer of this process would wait on it.
    for pool_event in ("reset", "checkin", "invalidate", "close"):
        event.listen(
            engine.pool, pool_event, lambda dbapi_connection, *_: writers.end(dbapi_connection)
        )


class _WriteLock:
    """The process's one writer of a SQLite file, and which DBAPI connection it is."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._holder: int | None = None

    def acquire(self, dbapi_connection) -> None:
        if not self._lock.acquire(timeout=SQLITE_BUSY_TIMEOUT_MS / 1000):
            raise ServiceUnavailable("the database stayed busy; retry", code="database_busy")
        self._holder = id(dbapi_connection)

    def held_by(self, dbapi_connection) -> bool:
        return self._holder is not None and self._holder == id(dbapi_connection)

    def release_if_held_by(self, dbapi_connection) -> None:
        if self.held_by(dbapi_connection):
            self._holder = None
            self._lock.release()

    def end(self, dbapi_connection) -> None:
        """Rolls back and lets the lock go, if this connection holds it."""
        if dbapi_connection is None or not self.held_by(dbapi_connection):
            return
        try:
            dbapi_connection.rollback()
        except Exception:  # noqa: S110 (an invalidated connection: nothing to roll back)
            pass
        finally:
            self.release_if_held_by(dbapi_connection)


_WRITE_LOCKS: dict[str, _WriteLock] = {}
_WRITE_LOCKS_GUARD = threading.Lock()


def _process_write_lock(database: str) -> _WriteLock:
    key = os.path.realpath(database) if database != ":memory:" else database
    with _WRITE_LOCKS_GUARD:
        return _WRITE_LOCKS.setdefault(key, _WriteLock())


def read_only(engine: Engine) -> Engine:
    """The same engine for work that never writes (polling, exports, health checks): on
    SQLite its transactions read a WAL snapshot without taking the write lock."""
    return engine.execution_options(**{READ_ONLY_OPTION: True})


# --- after the transaction ---------------------------------------------------------------
# A service never commits: the request scope (gateway.deps.get_session) commits once and
# then runs what the service asked for here, so a follow-up happens only for a change that
# landed (refreshing the in-memory policy, waking a worker) or only for one that did not
# (removing files written for it).


def after_commit(session: Session, callback: Callable[[], Any]) -> None:
    """Runs `callback` once the session's transaction has committed (never on rollback)."""
    session.info.setdefault(ON_COMMIT, []).append(callback)


def on_rollback(session: Session, callback: Callable[[], Any]) -> None:
    """Runs `callback` if the session's transaction rolls back instead (e.g. to remove
    files written for a change that did not land)."""
    session.info.setdefault(ON_ROLLBACK, []).append(callback)


def run_after_commit(session: Session) -> None:
    _run_callbacks(session, ON_COMMIT)


def run_on_rollback(session: Session) -> None:
    _run_callbacks(session, ON_ROLLBACK)


def _run_callbacks(session: Session, key: str) -> None:
    for callback in session.info.pop(key, ()):
        try:
            callback()
        except Exception:
            # The outcome is decided: a follow-up must not change the answer.
            log.exception("request.callback_failed", after=key)
