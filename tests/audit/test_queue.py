# ruff: noqa: S608  (test SQL names fixed tables and columns; values go in as parameters)
"""audit.chain.enqueue / sequence / flush: the queue in front of the chain."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlmodel import Session

from audit.chain import (
    STORED_NODE_LEVEL,
    ChainError,
    append,
    enqueue,
    flush,
    pending,
    read_head,
    sequence,
)
from audit.event import InvalidEventError
from audit.verify import verify_chain
from tests.audit.conftest import SEED_EVENTS, enqueue_seeded, seed_event

CHAIN_TABLES = {
    "audit_events": "seq",
    "audit_tree_nodes": "level, idx",
    "audit_checkpoints": "id",
    "audit_chain_head": "id",
}


def dump(engine, table: str, order: str) -> list[tuple]:
    with engine.connect() as connection:
        rows = connection.execute(text(f"SELECT * FROM {table} ORDER BY {order}")).all()
    return [tuple(bytes(v) if isinstance(v, memoryview) else v for v in row) for row in rows]


def queued(engine) -> int:
    with Session(engine) as session:
        return pending(session)


def chained_resources(engine) -> list[str]:
    with engine.connect() as connection:
        return list(connection.execute(text("SELECT resource FROM audit_events ORDER BY seq")))


class TestEnqueue:
    def test_returns_increasing_ids_and_never_commits(self, chain_engine):
        engine = chain_engine
        with Session(engine) as session:
            first = enqueue(session, **seed_event(50))
            second = enqueue(session, **seed_event(51))
            assert second > first
            assert pending(session) == 2
            session.rollback()
        assert queued(engine) == 0

    def test_ids_are_never_reused(self, chain_engine):
        engine = chain_engine
        (first,) = enqueue_seeded(engine, 1, start=55)
        assert sequence(engine) == 1  # the queue is empty again
        (second,) = enqueue_seeded(engine, 1, start=56)
        assert second > first

    def test_rolled_back_enqueue_never_reaches_the_chain(self, chain_engine):
        engine = chain_engine
        with Session(engine) as session:
            enqueue(session, **{**seed_event(60), "resource": "ds:rolled-back"})
            session.rollback()
        with Session(engine) as session:
            enqueue(session, **{**seed_event(61), "resource": "ds:committed"})
            session.commit()
        assert sequence(engine) == 1
        resources = [row[0] for row in chained_resources(engine)]
        assert resources[SEED_EVENTS:] == ["ds:committed"]
        assert verify_chain(engine).ok

    @pytest.mark.parametrize(
        "change",
        [
            {"details": {"score": 0.5}},
            {"details": {"password": "x"}},
            {"ts": "2026-11-28 12:00:00"},
            {"actor": "a" * 257},
            {"decision": ""},
        ],
        ids=["float", "secret-key", "bad-ts", "long-actor", "empty-decision"],
    )
    def test_refuses_bad_events_in_the_callers_transaction(self, chain_engine, change):
        engine = chain_engine
        with Session(engine) as session:
            with pytest.raises(InvalidEventError):
                enqueue(session, **{**seed_event(0), **change})
            assert pending(session) == 0

    def test_takes_no_chain_lock(self, chain_engine, backend):
        if backend != "postgresql":
            pytest.skip("a SQLite transaction holds the database write lock from BEGIN")
        engine = chain_engine
        with Session(engine) as writer:
            enqueue(writer, **seed_event(70))
            # The uncommitted enqueue holds no lock the sequencer waits for; its row is
            # invisible until it commits.
            assert sequence(engine) == 0
            writer.commit()
        assert sequence(engine) == 1


class TestSequence:
    def test_rows_equal_append_rows(self, fresh_engine, signer):
        count = 2 * (1 << STORED_NODE_LEVEL) + 3  # completes stored subtree nodes
        appended, sequenced = fresh_engine(), fresh_engine()
        with Session(appended) as session:
            for i in range(count):
                append(session, **seed_event(i), signer=signer, checkpoint_every=50)
            session.commit()
        enqueue_seeded(sequenced, count)
        # batches of 100 end mid-way between checkpoints and stored nodes
        assert sequence(sequenced, signer=signer, checkpoint_every=50, max_batch=100) == count
        for table, order in CHAIN_TABLES.items():
            assert dump(sequenced, table, order) == dump(appended, table, order), table
        assert len(dump(sequenced, "audit_tree_nodes", "level, idx")) == 3
        assert len(dump(sequenced, "audit_checkpoints", "id")) == count // 50

    def test_chains_in_queue_order_in_bounded_batches(self, chain_engine):
        engine = chain_engine
        enqueue_seeded(engine, 25, start=100)
        assert sequence(engine, max_batch=10, max_batches=2) == 20
        assert queued(engine) == 5
        assert sequence(engine, max_batch=10) == 5
        assert queued(engine) == 0
        resources = [row[0] for row in chained_resources(engine)]
        assert resources[SEED_EVENTS:] == [f"ds:{i}" for i in range(100, 125)]
        assert verify_chain(engine).ok

    def test_empty_queue_changes_nothing(self, chain_engine):
        engine = chain_engine
        before = dump(engine, "audit_chain_head", "id")
        assert sequence(engine) == 0
        assert dump(engine, "audit_chain_head", "id") == before

    def test_flush_has_no_batch_bound(self, chain_engine):
        engine = chain_engine
        enqueue_seeded(engine, 25, start=200)
        assert flush(engine, max_batch=10) == 25
        assert queued(engine) == 0
        with Session(engine) as session:
            assert read_head(session).seq == SEED_EVENTS + 25

    def test_refuses_a_malformed_queued_row(self, chain_engine):
        engine = chain_engine
        with engine.begin() as connection:  # written around enqueue: details not canonical
            connection.execute(
                text(
                    "INSERT INTO audit_queue (ts, actor, tenant, action, resource, decision, "
                    "details) VALUES (:ts, 'eve', 'default', 'x.y', 'ds:1', 'allow', :details)"
                ),
                {"ts": seed_event(0)["ts"], "details": '{"b": 1, "a": 2}'},
            )
        with pytest.raises(ChainError, match="cannot be chained"):
            sequence(engine)
        assert queued(engine) == 1  # the failed batch rolled back whole
        with Session(engine) as session:
            assert read_head(session).seq == SEED_EVENTS

    def test_verify_counts_pending_events_without_faulting(self, chain_engine, signer):
        engine = chain_engine
        enqueue_seeded(engine, 3, start=300)
        result = verify_chain(engine, public_key_pem=signer.public_key_pem())
        assert (result.ok, result.length, result.pending) == (True, SEED_EVENTS, 3)
        assert result.to_dict()["pending"] == 3
        sequence(engine)
        result = verify_chain(engine, public_key_pem=signer.public_key_pem())
        assert (result.ok, result.length, result.pending) == (True, SEED_EVENTS + 3, 0)


class TestQueueTriggers:
    def test_update_is_refused(self, chain_engine):
        engine = chain_engine
        enqueue_seeded(engine, 1, start=400)
        with pytest.raises(Exception, match="append-only"), engine.begin() as connection:
            connection.execute(text("UPDATE audit_queue SET actor = 'mallory'"))
        with engine.connect() as connection:
            actors = connection.execute(text("SELECT actor FROM audit_queue")).scalars().all()
        assert actors == [seed_event(400)["actor"]]

    def test_delete_is_allowed(self, chain_engine):
        engine = chain_engine
        enqueue_seeded(engine, 2, start=410)
        with engine.begin() as connection:
            deleted = connection.execute(text("DELETE FROM audit_queue")).rowcount
        assert deleted == 2
        assert queued(engine) == 0
