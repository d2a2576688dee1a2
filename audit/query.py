"""Reading the audit trail: filtered pages, a streaming JSONL export, inclusion proofs and
the latest signed checkpoint. Everything takes the caller's Session and only reads,
except ``latest_checkpoint`` with a signer, which may add a checkpoint (never commits).

Time filters compare the fixed-width ``ts`` text: ``since`` is inclusive, ``until``
exclusive; both accept any RFC 3339 date-time or an aware datetime (audit.encoding).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, desc, select
from sqlmodel import Session, col

from audit.chain import read_head, sign_checkpoint
from audit.checkpoints import Checkpoint, Signer
from audit.encoding import normalize_ts
from audit.hashing import EMPTY_ROOT, leaf_hash
from audit.merkle import (
    consistency_proof,
    frontier_root,
    inclusion_path,
    root,
    verify_consistency,
    verify_inclusion,
)
from audit.models import AuditCheckpoint, AuditEvent, AuditTreeNode, table_of

MAX_PAGE = 1000
PROOF_FORMAT = "tunegate-inclusion-proof/v1"
BLOCK = 256  # audit.chain stores subtrees of this many leaves and up

_events = table_of(AuditEvent)
_nodes = table_of(AuditTreeNode)
_ROW = (_events.c.seq, _events.c.body, _events.c.prev_hash, _events.c.hash)


@dataclass(frozen=True)
class EventPage:
    events: list[dict]
    next_after: int | None  # pass as ``after`` for the next page; None at the end


def _where(
    *,
    actor: str | None = None,
    action: str | None = None,
    resource: str | None = None,
    tenant: str | None = None,
    decision: str | None = None,
    since: str | datetime | None = None,
    until: str | datetime | None = None,
) -> list[ColumnElement[bool]]:
    clauses: list[ColumnElement[bool]] = []
    for column, value in (
        (_events.c.actor, actor),
        (_events.c.action, action),
        (_events.c.resource, resource),
        (_events.c.tenant, tenant),
        (_events.c.decision, decision),
    ):
        if value is not None:
            clauses.append(column == value)
    if since is not None:
        clauses.append(_events.c.ts >= normalize_ts(since))
    if until is not None:
        clauses.append(_events.c.ts < normalize_ts(until))
    return clauses


def event_dict(body: bytes, prev_hash: bytes, digest: bytes) -> dict:
    """An event as the API shows it: the fields its body records, plus hex hashes."""
    event = json.loads(body)
    event["prev_hash"] = bytes(prev_hash).hex()
    event["hash"] = bytes(digest).hex()
    return event


def list_events(session: Session, *, after: int = 0, limit: int = 100, **filters: Any) -> EventPage:
    """Events with seq > ``after`` matching every filter given (actor, action, resource,
    tenant, decision, since, until), oldest first, at most ``limit``."""
    if not 1 <= limit <= MAX_PAGE:
        raise ValueError(f"limit must be between 1 and {MAX_PAGE}")
    if after < 0:
        raise ValueError("after must be >= 0")
    rows = (
        session.connection()
        .execute(
            select(*_ROW)
            .where(_events.c.seq > after, *_where(**filters))
            .order_by(_events.c.seq)
            .limit(limit + 1)
        )
        .all()
    )
    more = len(rows) > limit
    rows = rows[:limit]
    return EventPage(
        events=[event_dict(body, prev, digest) for _, body, prev, digest in rows],
        next_after=rows[-1][0] if more else None,
    )


def get_event(session: Session, seq: int) -> dict | None:
    row = session.connection().execute(select(*_ROW).where(_events.c.seq == seq)).first()
    return None if row is None else event_dict(row[1], row[2], row[3])


def export_jsonl(
    session: Session, *, after: int = 0, chunk_size: int = 1000, **filters: Any
) -> Iterator[bytes]:
    """The matching events as JSON Lines, one chunk of up to ``chunk_size`` lines per
    item, read page by page on seq (memory stays bounded). A line is the event's body
    with ``hash`` and ``prev_hash`` (hex) put first: drop those two and canonicalise
    (audit.encoding) to get the exact body bytes back."""
    if chunk_size < 1:
        raise ValueError("chunk_size must be >= 1")
    where = _where(**filters)
    connection = session.connection()
    while True:
        rows = connection.execute(
            select(*_ROW)
            .where(_events.c.seq > after, *where)
            .order_by(_events.c.seq)
            .limit(chunk_size)
        ).all()
        if not rows:
            return
        yield b"".join(
            b'{"hash":"%s","prev_hash":"%s",%s\n'
            % (bytes(digest).hex().encode(), bytes(prev).hex().encode(), bytes(body)[1:])
            for _, body, prev, digest in rows
        )
        after = rows[-1][0]


# --- inclusion proofs ---------------------------------------------------------------------


class _StoredTree:
    """Subtree hashes of the first ``size`` leaves, from audit_tree_nodes where stored and
    from the bodies of at most a couple of 256-leaf blocks otherwise."""

    def __init__(self, session: Session, size: int) -> None:
        self.connection = session.connection()
        self.size = size
        self.blocks: dict[int, list[bytes]] = {}  # block number -> bodies

    def bodies(self, block: int) -> list[bytes]:
        if block not in self.blocks:
            first = block * BLOCK + 1
            last = min(first + BLOCK - 1, self.size)
            rows = self.connection.execute(
                select(_events.c.seq, _events.c.body)
                .where(_events.c.seq >= first, _events.c.seq <= last)
                .order_by(_events.c.seq)
            ).all()
            if [row[0] for row in rows] != list(range(first, last + 1)):
                raise LookupError(f"events {first}..{last} are not all there; verify the chain")
            self.blocks[block] = [bytes(row[1]) for row in rows]
        return self.blocks[block]

    def body(self, index: int) -> bytes:
        return self.bodies(index // BLOCK)[index % BLOCK]

    def subtree(self, start: int, end: int) -> bytes:
        n = end - start
        if n <= BLOCK:  # aligned, so inside one block
            base = (start // BLOCK) * BLOCK
            bodies = self.bodies(start // BLOCK)[start - base : end - base]
            return root([leaf_hash(body) for body in bodies])
        if n & (n - 1) == 0:
            level = n.bit_length() - 1
            stored = self.connection.execute(
                select(_nodes.c.hash).where(
                    _nodes.c.level == level,
                    _nodes.c.idx == start >> level,
                )
            ).scalar()
            if stored is not None:
                return bytes(stored)
        half = 1 << ((n - 1).bit_length() - 1)
        return root([self.subtree(start, start + half), self.subtree(start + half, end)])

    def root(self) -> bytes:
        parts, offset = [], 0
        for height in range(self.size.bit_length() - 1, -1, -1):
            if self.size >> height & 1:
                parts.append(self.subtree(offset, offset + (1 << height)))
                offset += 1 << height
        return frontier_root(parts)


def inclusion_proof(session: Session, seq: int, tree_size: int | None = None) -> dict:
    """A proof that event ``seq`` is in the tree of the first ``tree_size`` events
    (default: all of them now). Pair it with a checkpoint of that size for
    audit.offline.verify_proof. Raises LookupError when seq or tree_size is out of range."""
    head = read_head(session)
    size = head.seq if tree_size is None else tree_size
    if not 1 <= size <= head.seq:
        raise LookupError(f"tree_size {size} is not between 1 and {head.seq}")
    if not 1 <= seq <= size:
        raise LookupError(f"event {seq} is not in a tree of {size} events")
    tree = _StoredTree(session, size)
    index = seq - 1
    hashes = inclusion_path(index, size, tree.subtree)
    body = tree.body(index)
    leaf = leaf_hash(body)
    tree_root = head.root if size == head.seq else tree.root()
    verify_inclusion(leaf, index, size, hashes, tree_root)  # never serve a broken proof
    return {
        "format": PROOF_FORMAT,
        "seq": seq,
        "leaf_index": index,
        "tree_size": size,
        "leaf_hash": leaf.hex(),
        "body": body.decode("utf-8"),
        "hashes": [h.hex() for h in hashes],
        "root_hash": tree_root.hex(),
    }


# --- checkpoints --------------------------------------------------------------------------


def _checkpoint(row: AuditCheckpoint) -> Checkpoint:
    return Checkpoint(row.tree_size, bytes(row.root_hash), row.ts, row.key_id, bytes(row.signature))


def latest_checkpoint(session: Session, signer: Signer | None = None) -> Checkpoint | None:
    """The newest checkpoint (by this signer's key, when one is given). With a signer,
    one is signed now if none covers the current head."""
    query = select(AuditCheckpoint).order_by(
        desc(col(AuditCheckpoint.tree_size)), desc(col(AuditCheckpoint.id))
    )
    if signer is not None:
        query = query.where(col(AuditCheckpoint.key_id) == signer.key_id)
    row = session.scalars(query.limit(1)).first()
    newest = None if row is None else _checkpoint(row)
    if signer is not None and (newest is None or newest.tree_size < read_head(session).seq):
        return sign_checkpoint(session, signer)
    return newest


def checkpoint_at(session: Session, tree_size: int) -> Checkpoint | None:
    row = session.scalars(
        select(AuditCheckpoint)
        .where(col(AuditCheckpoint.tree_size) == tree_size)
        .order_by(desc(col(AuditCheckpoint.id)))
        .limit(1)
    ).first()
    return None if row is None else _checkpoint(row)


# --- checkpoint history and consistency proofs (issue 16 §1) -----------------------------


def checkpoints_after(
    session: Session, *, after: int = 0, limit: int = 100, key_id: str | None = None
) -> tuple[list[Checkpoint], list[int], bool]:
    """Stored checkpoints with id > ``after`` (by key ``key_id`` when given), oldest first,
    at most ``limit``: (checkpoints, their ids, whether more follow)."""
    if not 1 <= limit <= MAX_PAGE:
        raise ValueError(f"limit must be between 1 and {MAX_PAGE}")
    query = select(AuditCheckpoint).where(col(AuditCheckpoint.id) > after)
    if key_id is not None:
        query = query.where(col(AuditCheckpoint.key_id) == key_id)
    rows = session.scalars(query.order_by(col(AuditCheckpoint.id)).limit(limit + 1)).all()
    more = len(rows) > limit
    rows = rows[:limit]
    return [_checkpoint(row) for row in rows], [int(row.id or 0) for row in rows], more


def tree_root(session: Session, size: int) -> bytes:
    """MTH of the first ``size`` events, off the stored tree (O(log n) reads)."""
    head = read_head(session)
    if not 0 <= size <= head.seq:
        raise LookupError(f"tree size {size} is not between 0 and {head.seq}")
    return head.root if size == head.seq else _StoredTree(session, size).root()


def consistency(session: Session, first: int, second: int | None = None) -> dict:
    """An RFC 6962 consistency proof from the tree of ``first`` events to the tree of
    ``second`` (default: all of them now), read off the stored tree: O(log n) node reads
    and at most a couple of 256-event blocks, at any size. Checked before it is returned.
    Raises LookupError when the sizes are out of range."""
    head = read_head(session)
    size = head.seq if second is None else second
    if not 0 <= size <= head.seq:
        raise LookupError(f"second tree size {size} is not between 0 and {head.seq}")
    if not 0 <= first <= size:
        raise LookupError(f"first tree size {first} is not between 0 and {size}")
    tree = _StoredTree(session, size)
    hashes = consistency_proof(first, size, tree.subtree)
    second_root = head.root if size == head.seq else tree.root()
    first_root = _StoredTree(session, first).root() if first else EMPTY_ROOT
    verify_consistency(first, size, first_root, second_root, hashes)  # never serve a bad one
    return {
        "first": first,
        "second": size,
        "first_root": first_root,
        "second_root": second_root,
        "hashes": hashes,
    }
