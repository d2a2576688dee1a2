# ruff: noqa: S608  (test SQL names fixed tables and columns; values go in as parameters)
"""Audit fixtures: a fixed signing key, and a seeded chain per backend that every test
may change (tamper tests drop triggers and edit rows) and that is restored afterwards."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Engine, text
from sqlmodel import Session

from audit.chain import append, enqueue
from audit.checkpoints import Signer
from tests.conftest import DatabaseFactory

SEED_EVENTS = 12
CHECKPOINT_EVERY = 4
FIXED_KEY = bytes(range(32))


@pytest.fixture(scope="session")
def signer() -> Signer:
    return Signer(Ed25519PrivateKey.from_private_bytes(FIXED_KEY))


def seed_event(i: int) -> dict:
    """The i-th (0-based) seeded event: varied, with a null policy_version, an escape and
    non-ASCII text so that both verification paths run."""
    return {
        "actor": ["alice", "bob", "carol\u00e9", 'dan"q'][i % 4],
        "tenant": "acme" if i % 3 else "default",
        "action": ["policy.check", "fine_tuning.job.create", "audit.read"][i % 3],
        "resource": f"ds:{i}",
        "decision": ["allow", "deny", "error"][i % 3],
        "policy_version": None if i % 5 == 4 else f"pv{i % 2}",
        "details": {"n": i, "route": f"/v1/x/{i}", "note": "tab\there" if i == 7 else "ok"},
        "ts": f"2026-11-28T{12 + i // 3600:02d}:{i // 60 % 60:02d}:{i % 60:02d}.{i % 10**6:06d}Z",
    }


def append_seeded(engine: Engine, count: int, signer: Signer | None, start: int = 0) -> None:
    for i in range(start, start + count):
        with Session(engine) as session:
            append(session, **seed_event(i), signer=signer, checkpoint_every=CHECKPOINT_EVERY)
            session.commit()


def enqueue_seeded(engine: Engine, count: int, start: int = 0) -> list[int]:
    """Enqueue seed events start..start+count-1 in one committed transaction."""
    with Session(engine) as session:
        ids = [enqueue(session, **seed_event(i)) for i in range(start, start + count)]
        session.commit()
    return ids


def drop_append_only_triggers(engine: Engine) -> None:
    with engine.begin() as connection:
        for table in ("audit_events", "audit_checkpoints"):
            if engine.dialect.name == "sqlite":
                connection.execute(text(f"DROP TRIGGER {table}_no_update"))
                connection.execute(text(f"DROP TRIGGER {table}_no_delete"))
            else:
                connection.execute(text(f"DROP TRIGGER {table}_no_update_delete ON {table}"))
                connection.execute(text(f"DROP TRIGGER {table}_no_truncate ON {table}"))


TABLES = (
    "audit_events",
    "audit_checkpoints",
    "audit_tree_nodes",
    "audit_chain_head",
    "audit_queue",
)


class SeededChain:
    """One seeded database per backend, put back to its seeded state after every test:
    rows, head and the append-only triggers (which tamper tests drop)."""

    def __init__(self, databases: DatabaseFactory, signer: Signer) -> None:
        self._databases = databases
        self._signer = signer
        self._engines: dict[str, Engine] = {}
        self._rows: dict[str, dict[str, list]] = {}
        self._triggers: dict[str, list[tuple[str, str, str]]] = {}

    def engine(self, backend: str) -> Engine:
        if backend not in self._engines:
            engine = self._databases.engine(backend)
            append_seeded(engine, SEED_EVENTS, self._signer)
            with engine.connect() as connection:
                self._rows[backend] = {
                    table: [tuple(r) for r in connection.execute(text(f"SELECT * FROM {table}"))]
                    for table in TABLES
                }
                self._triggers[backend] = [
                    tuple(r) for r in connection.execute(text(TRIGGERS[backend]))
                ]
            self._engines[backend] = engine
        return self._engines[backend]

    def restore(self, backend: str) -> None:
        engine = self._engines[backend]
        engine.dispose()  # no connection left open by the test
        with engine.begin() as connection:
            present = {r[0] for r in connection.execute(text(TRIGGERS[backend]))}
            for name, table, _ in self._triggers[backend]:
                if name in present:
                    connection.execute(text(DROP_TRIGGER[backend].format(name=name, table=table)))
            for table in TABLES:
                connection.execute(text(f"DELETE FROM {table}"))
                rows = self._rows[backend][table]
                if rows:
                    marks = ", ".join(f":c{i}" for i in range(len(rows[0])))
                    connection.execute(
                        text(f"INSERT INTO {table} VALUES ({marks})"),
                        [{f"c{i}": v for i, v in enumerate(row)} for row in rows],
                    )
            for _, _, definition in self._triggers[backend]:
                connection.execute(text(definition))


TRIGGERS = {
    "sqlite": "SELECT name, tbl_name, sql FROM sqlite_master WHERE type = 'trigger'",
    "postgresql": (
        "SELECT t.tgname, c.relname, pg_get_triggerdef(t.oid) FROM pg_trigger t "
        "JOIN pg_class c ON c.oid = t.tgrelid WHERE NOT t.tgisinternal"
    ),
}
DROP_TRIGGER = {"sqlite": "DROP TRIGGER {name}", "postgresql": "DROP TRIGGER {name} ON {table}"}


@pytest.fixture(scope="session")
def seeded_chains(databases: DatabaseFactory, signer: Signer) -> SeededChain:
    return SeededChain(databases, signer)


@pytest.fixture
def chain_engine(seeded_chains: SeededChain, backend: str) -> Iterator[Engine]:
    """The seeded 12-event chain (checkpoints at 4, 8, 12); do anything to it, even drop
    its triggers and tamper with it: it is put back after the test."""
    engine = seeded_chains.engine(backend)
    try:
        yield engine
    finally:
        seeded_chains.restore(backend)
