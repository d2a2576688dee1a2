"""The SQLite write lock a process's writers queue on: every way a connection can leave
its write transaction must let the lock go."""

from __future__ import annotations

import gc
import os

import pytest
from sqlalchemy import text
from sqlmodel import Session

from gateway.db import _WRITE_LOCKS, make_engine


@pytest.fixture
def engine_and_lock(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'lock.db'}")
    with engine.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE t (x INTEGER)")
    yield engine, _WRITE_LOCKS[os.path.realpath(tmp_path / "lock.db")]
    engine.dispose()


def _free(lock) -> bool:
    if lock._lock.acquire(timeout=1):
        lock._lock.release()
        return True
    return False


class TestWriteLockIsReleased:
    def test_on_commit(self, engine_and_lock):
        engine, lock = engine_and_lock
        with Session(engine) as session:
            session.exec(text("INSERT INTO t VALUES (1)"))
            assert not _free(lock)
            session.commit()
        assert _free(lock)

    def test_on_close_with_the_transaction_open(self, engine_and_lock):
        engine, lock = engine_and_lock
        session = Session(engine)
        session.exec(text("INSERT INTO t VALUES (1)"))
        session.close()
        assert _free(lock)

    def test_when_the_session_is_garbage_collected(self, engine_and_lock):
        engine, lock = engine_and_lock

        def abandon() -> None:
            Session(engine).exec(text("INSERT INTO t VALUES (2)"))

        abandon()
        gc.collect()
        assert _free(lock)

    def test_when_the_connection_is_invalidated(self, engine_and_lock):
        engine, lock = engine_and_lock
        session = Session(engine)
        session.exec(text("INSERT INTO t VALUES (3)"))
        session.connection().invalidate()
        with pytest.raises(Exception):  # noqa: B017 (SQLAlchemy's PendingRollbackError)
            session.rollback()
        session.close()
        assert _free(lock)

    def test_after_a_failed_statement(self, engine_and_lock):
        engine, lock = engine_and_lock
        session = Session(engine)
        with pytest.raises(Exception):  # noqa: B017
            session.exec(text("INSERT INTO missing VALUES (1)"))
        session.close()
        assert _free(lock)
