# ruff: noqa: S608  (test SQL names fixed tables and columns; values go in as parameters)
from __future__ import annotations

import pytest
from sqlalchemy import select, text
from sqlmodel import Session

from audit.chain import STORED_NODE_LEVEL, append, read_head, sign_checkpoint
from audit.checkpoints import verify_checkpoint
from audit.event import InvalidEventError
from audit.hashing import GENESIS_HASH, chain_hash, leaf_hash
from audit.merkle import levels, root
from audit.models import AuditCheckpoint, AuditEvent, AuditTreeNode
from tests.audit.conftest import CHECKPOINT_EVERY, SEED_EVENTS, append_seeded, seed_event

FIRST_BODY = (
    b'{"action":"policy.check","actor":"alice","decision":"allow",'
    b'"details":{"n":0,"note":"ok","route":"/v1/x/0"},"policy_version":"pv0",'
    b'"resource":"ds:0","seq":1,"tenant":"default","ts":"2026-11-28T12:00:00.000000Z","v":1}'
)


def rows(engine):
    with Session(engine) as session:
        return session.exec(select(AuditEvent).order_by(AuditEvent.seq)).scalars().all()


class TestAppend:
    def test_first_event_fixed_vector(self, chain_engine):
        first = rows(chain_engine)[0]
        assert first.body == FIRST_BODY
        assert first.prev_hash == GENESIS_HASH
        assert first.hash == chain_hash(GENESIS_HASH, FIRST_BODY)
        assert first.hash.hex() == chain_hash(bytes(32), FIRST_BODY).hex()

    def test_links_columns_and_head(self, chain_engine):
        engine = chain_engine
        events = rows(engine)
        assert [e.seq for e in events] == list(range(1, SEED_EVENTS + 1))
        prev = GENESIS_HASH
        for i, event in enumerate(events):
            expected = seed_event(i)
            assert event.prev_hash == prev and event.hash == chain_hash(prev, event.body)
            for name in (
                "actor",
                "tenant",
                "action",
                "resource",
                "decision",
                "policy_version",
                "ts",
            ):
                assert getattr(event, name) == expected[name]
            prev = event.hash
        with Session(engine) as session:
            head = read_head(session)
        assert (head.seq, head.hash) == (SEED_EVENTS, prev)
        assert head.root == root([leaf_hash(e.body) for e in events])

    def test_checkpoints_every_n_events(self, chain_engine, signer):
        engine = chain_engine
        leaves = [leaf_hash(e.body) for e in rows(engine)]
        with Session(engine) as session:
            stored = (
                session.exec(select(AuditCheckpoint).order_by(AuditCheckpoint.tree_size))
                .scalars()
                .all()
            )
        assert [c.tree_size for c in stored] == list(
            range(CHECKPOINT_EVERY, SEED_EVENTS + 1, CHECKPOINT_EVERY)
        )
        for c in stored:
            assert c.root_hash == root(leaves[: c.tree_size])
            assert c.ts == seed_event(c.tree_size - 1)["ts"]
        from audit.query import _checkpoint

        for c in stored:
            verify_checkpoint(_checkpoint(c), signer.public_key_pem())

    def test_never_commits(self, chain_engine):
        engine = chain_engine
        with Session(engine) as session:
            appended = append(session, **seed_event(99))
            assert appended.seq == SEED_EVENTS + 1
            session.rollback()
        assert len(rows(engine)) == SEED_EVENTS
        with Session(engine) as session:
            assert read_head(session).seq == SEED_EVENTS

    def test_rides_in_the_callers_transaction(self, chain_engine):
        engine = chain_engine
        with Session(engine) as session:
            append(session, **seed_event(20))
            append(session, **seed_event(21))
            session.commit()
        assert [e.seq for e in rows(engine)][-2:] == [SEED_EVENTS + 1, SEED_EVENTS + 2]

    def test_refuses_bad_events_before_touching_the_database(self, chain_engine):
        engine = chain_engine
        with Session(engine) as session, pytest.raises(InvalidEventError):
            append(session, **{**seed_event(0), "details": {"score": 0.5}})
        assert len(rows(engine)) == SEED_EVENTS

    def test_on_demand_checkpoint(self, chain_engine, signer):
        engine = chain_engine
        with Session(engine) as session:
            append(session, **seed_event(30))
            checkpoint = sign_checkpoint(session, signer)
            session.commit()
        assert checkpoint.tree_size == SEED_EVENTS + 1
        verify_checkpoint(checkpoint, signer.public_key_pem())


class TestStoredNodes:
    def test_subtrees_of_256_and_up_are_stored(self, fresh_engine):
        engine = fresh_engine()
        count = 2 * (1 << STORED_NODE_LEVEL) + 3
        append_seeded(engine, count, None)
        leaves = [leaf_hash(e.body) for e in rows(engine)]
        tree = levels(leaves)
        with Session(engine) as session:
            nodes = session.exec(select(AuditTreeNode)).scalars().all()
        got = {(n.level, n.idx): n.hash for n in nodes}
        assert got == {(8, 0): tree[8][0], (8, 1): tree[8][1], (9, 0): tree[9][0]}


class TestTriggers:
    """The database itself refuses to change or remove audit rows."""

    @pytest.mark.parametrize("table", ["audit_events", "audit_checkpoints"])
    @pytest.mark.parametrize(
        "statement",
        [
            "UPDATE {table} SET ts = '2000-01-01T00:00:00.000000Z'",
            "DELETE FROM {table}",
            "DELETE FROM {table} WHERE {key} = (SELECT max({key}) FROM {table})",
        ],
    )
    def test_update_and_delete_are_refused(self, chain_engine, table, statement):
        engine = chain_engine
        key = "seq" if table == "audit_events" else "id"
        with pytest.raises(Exception, match="append-only"), engine.begin() as connection:
            connection.execute(text(statement.format(table=table, key=key)))
        with engine.connect() as connection:
            count = connection.execute(text(f"SELECT count(*) FROM {table}")).scalar()
        assert count == (
            SEED_EVENTS if table == "audit_events" else SEED_EVENTS // CHECKPOINT_EVERY
        )

    @pytest.mark.parametrize("table", ["audit_events", "audit_checkpoints"])
    def test_truncate_is_refused_on_postgresql(self, chain_engine, backend, table):
        if backend != "postgresql":
            pytest.skip("SQLite has no TRUNCATE (DELETE is refused above)")
        engine = chain_engine
        with pytest.raises(Exception, match="append-only"), engine.begin() as connection:
            connection.execute(text(f"TRUNCATE {table}"))
        with engine.connect() as connection:
            assert connection.execute(text(f"SELECT count(*) FROM {table}")).scalar() > 0

    def test_inserts_still_work(self, chain_engine):
        engine = chain_engine
        append_seeded(engine, 1, None, start=40)
        assert len(rows(engine)) == SEED_EVENTS + 1
