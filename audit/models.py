from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, Integer, LargeBinary, String, Table, Text
from sqlalchemy import inspect as sa_inspect
from sqlmodel import Field, SQLModel

from audit.hashing import GENESIS_HASH


class AuditEvent(SQLModel, table=True):
    """One link of the chain. `body` is the canonical JSON of the whole event; the other
    columns are indexed copies of what it says, and the verifier checks they agree."""

    __tablename__ = "audit_events"
    __table_args__ = (
        Index("ix_audit_events_actor_seq", "actor", "seq"),
        Index("ix_audit_events_action_seq", "action", "seq"),
        Index("ix_audit_events_resource_seq", "resource", "seq"),
        Index("ix_audit_events_tenant_seq", "tenant", "seq"),
        Index("ix_audit_events_ts", "ts"),
    )

    seq: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    # RFC 3339 UTC with microseconds and a Z: fixed width, so text order is time order.
    ts: str = Field(sa_column=Column(String(32), nullable=False))
    actor: str = Field(sa_column=Column(String(256), nullable=False))
    tenant: str = Field(sa_column=Column(String(128), nullable=False))
    action: str = Field(sa_column=Column(String(128), nullable=False))
    resource: str = Field(sa_column=Column(String(512), nullable=False))
    decision: str = Field(sa_column=Column(String(16), nullable=False))
    policy_version: str | None = Field(default=None, sa_column=Column(String(64), nullable=True))
    body: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    prev_hash: bytes = Field(sa_column=Column(LargeBinary(32), nullable=False))
    hash: bytes = Field(sa_column=Column(LargeBinary(32), nullable=False, unique=True))


class AuditChainHead(SQLModel, table=True):
    """A single row (id=1) that appends lock, so concurrent writers form one chain."""

    __tablename__ = "audit_chain_head"

    id: int = Field(default=1, primary_key=True)
    seq: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    hash: bytes = Field(default=GENESIS_HASH, sa_column=Column(LargeBinary(32), nullable=False))
    # RFC 6962 compact range of the Merkle tree over events 1..seq: the roots of its
    # perfect subtrees, left to right, 32 bytes each. Lets a checkpoint be signed in
    # O(log n) at append time.
    frontier: bytes = Field(default=b"", sa_column=Column(LargeBinary, nullable=False))


class AuditCheckpoint(SQLModel, table=True):
    """An Ed25519-signed tree head."""

    __tablename__ = "audit_checkpoints"

    id: int | None = Field(default=None, primary_key=True)
    tree_size: int = Field(sa_column=Column(BigInteger, nullable=False, index=True))
    root_hash: bytes = Field(sa_column=Column(LargeBinary(32), nullable=False))
    ts: str = Field(sa_column=Column(String(32), nullable=False))
    key_id: str = Field(sa_column=Column(String(64), nullable=False))
    signature: bytes = Field(sa_column=Column(LargeBinary, nullable=False))


class AuditTreeNode(SQLModel, table=True):
    """Perfect-subtree hashes of the Merkle tree at levels >= 8 (256 leaves and up),
    written by the append that completes them (one row per 128 events on average).
    Inclusion proofs read these plus at most two blocks of 256 bodies, so a proof costs
    the same at a billion events as at a thousand."""

    __tablename__ = "audit_tree_nodes"

    level: int = Field(sa_column=Column(Integer, primary_key=True, autoincrement=False))
    idx: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    hash: bytes = Field(sa_column=Column(LargeBinary(32), nullable=False))


# SQLite autoincrements only an INTEGER PRIMARY KEY (the rowid); PostgreSQL gets BIGSERIAL.
QUEUE_ID = BigInteger().with_variant(Integer(), "sqlite")


class AuditQueued(SQLModel, table=True):
    """An event recorded in its caller's transaction and not yet chained. The sequencer
    (audit.chain.sequence) chains queued rows in id order and deletes them in the same
    transaction. The database refuses UPDATE; DELETE is how rows leave.

    ``sqlite_autoincrement``: ids are never reused on SQLite either, so an id names one
    event for good."""

    __tablename__ = "audit_queue"
    __table_args__ = {"sqlite_autoincrement": True}

    id: int | None = Field(
        default=None, sa_column=Column(QUEUE_ID, primary_key=True, autoincrement=True)
    )
    ts: str = Field(sa_column=Column(String(32), nullable=False))
    actor: str = Field(sa_column=Column(String(256), nullable=False))
    tenant: str = Field(sa_column=Column(String(128), nullable=False))
    action: str = Field(sa_column=Column(String(128), nullable=False))
    resource: str = Field(sa_column=Column(String(512), nullable=False))
    decision: str = Field(sa_column=Column(String(16), nullable=False))
    policy_version: str | None = Field(default=None, sa_column=Column(String(64), nullable=True))
    # canonical JSON text (audit.event.encode_details), copied verbatim into the body
    details: str = Field(sa_column=Column(Text, nullable=False))


def table_of(model: type[SQLModel]) -> Table:
    """A table model's Core table, for statements that skip the ORM (SQLModel sets
    ``__table__`` when the class is made; its type stubs do not declare it)."""
    table = sa_inspect(model).local_table
    assert isinstance(table, Table)
    return table
