from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, LargeBinary, String, Text, UniqueConstraint
from sqlmodel import Field, SQLModel


class AuditCosignature(SQLModel, table=True):
    """A witness's cosignature (C2SP tlog-cosignature) on one of the gateway's audit
    checkpoints, as the witness returned it. ``line`` is the signature line itself, to be
    appended to the checkpoint's signed note."""

    __tablename__ = "audit_cosignatures"
    __table_args__ = (
        UniqueConstraint("tree_size", "witness", "key_id", name="uq_audit_cosignatures_witness"),
        Index("ix_audit_cosignatures_tree_size", "tree_size"),
    )

    id: int | None = Field(default=None, primary_key=True)
    tree_size: int = Field(sa_column=Column(BigInteger, nullable=False))
    root_hash: bytes = Field(sa_column=Column(LargeBinary(32), nullable=False))
    witness: str = Field(sa_column=Column(String(256), nullable=False))
    key_id: str = Field(sa_column=Column(String(8), nullable=False))  # hex, 4 bytes
    timestamp: int = Field(sa_column=Column(BigInteger, nullable=False))  # the witness's clock
    line: str = Field(sa_column=Column(Text, nullable=False))
