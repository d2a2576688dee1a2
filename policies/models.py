from __future__ import annotations

from sqlalchemy import Column, Index, LargeBinary, String, Table, Text
from sqlalchemy import inspect as sa_inspect
from sqlmodel import Field, SQLModel


class CasbinRule(SQLModel, table=True):
    """The rule table in the layout Casbin adapters use (ptype, v0..v5)."""

    __tablename__ = "casbin_rule"
    __table_args__ = (
        Index("ix_casbin_rule_unique", "ptype", "v0", "v1", "v2", "v3", "v4", "v5", unique=True),
    )

    id: int | None = Field(default=None, primary_key=True)
    ptype: str = Field(sa_column=Column(String(8), nullable=False))
    v0: str = Field(default="", sa_column=Column(String(256), nullable=False))
    v1: str = Field(default="", sa_column=Column(String(256), nullable=False))
    v2: str = Field(default="", sa_column=Column(String(256), nullable=False))
    v3: str = Field(default="", sa_column=Column(String(256), nullable=False))
    v4: str = Field(default="", sa_column=Column(String(256), nullable=False))
    v5: str = Field(default="", sa_column=Column(String(256), nullable=False))


class PolicyVersion(SQLModel, table=True):
    """One row per change of the rule set. `id` orders versions; `hash` names the rule set
    (sha256 of the sorted rules) and is what decisions record. `changes` is canonical JSON
    of the rules added and removed, so other processes can apply the change incrementally."""

    __tablename__ = "policy_versions"

    id: int | None = Field(default=None, primary_key=True)
    hash: str = Field(sa_column=Column(String(64), nullable=False, index=True))
    parent_hash: str | None = Field(default=None, sa_column=Column(String(64), nullable=True))
    created_at: str = Field(sa_column=Column(String(32), nullable=False))
    actor: str = Field(sa_column=Column(String(256), nullable=False))
    rule_count: int = Field(default=0)
    changes: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    reason: str | None = Field(default=None, sa_column=Column(Text, nullable=True))


def table_of(model: type[SQLModel]) -> Table:
    """A table model's Core table, for statements that skip the ORM (SQLModel sets
    ``__table__`` when the class is made; its type stubs do not declare it)."""
    table = sa_inspect(model).local_table
    assert isinstance(table, Table)
    return table
