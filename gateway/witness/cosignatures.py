"""The witnesses' cosignatures of a stored checkpoint, as the audit API shows them: the
lines appended to the checkpoint's signed note (a reader with the witnesses' vkeys checks
K of N offline: audit.witness.require_cosignatures, `tunegate witness verify`)."""

from __future__ import annotations

from sqlalchemy import select
from sqlmodel import Session, col

from gateway.witness.models import AuditCosignature


def cosignature_lines(session: Session, tree_size: int, root_hash: bytes) -> list[str]:
    """The stored witness cosignature lines of the checkpoint (size, root), each with
    its final newline, for the audit API to append to the served signed note."""
    rows = session.scalars(
        select(AuditCosignature)
        .where(
            col(AuditCosignature.tree_size) == tree_size,
            col(AuditCosignature.root_hash) == root_hash,
        )
        .order_by(col(AuditCosignature.id))
    ).all()
    return [row.line if row.line.endswith("\n") else row.line + "\n" for row in rows]


def with_cosignatures(session: Session, note: str, tree_size: int, root_hash: bytes) -> str:
    """``note`` with the witnesses' cosignature lines appended (those not on it yet)."""
    present = set(note.splitlines())
    extra = [
        line
        for line in cosignature_lines(session, tree_size, root_hash)
        if line[:-1] not in present
    ]
    if not extra:
        return note
    return note + "".join(extra) if note.endswith("\n") else note + "\n" + "".join(extra)
