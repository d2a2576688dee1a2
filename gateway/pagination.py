"""The one listing loop: rows in keyset order, filtered by the policy, a page at a time.

A listing never shows what a direct read would refuse, so each row is put to the policy
(microseconds on the fast path). The database is read in batches from a keyset cursor,
never with OFFSET: page 5,000 costs what page 1 costs, and rows the caller may not see
are skipped a batch at a time."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar, cast

from sqlalchemy import ColumnElement, and_, or_
from sqlalchemy.orm import Mapped, QueryableAttribute
from sqlmodel import Session
from sqlmodel.sql.expression import SelectOfScalar

T = TypeVar("T")

BATCH = 500


def visible_page(
    session: Session,
    query: SelectOfScalar[T],
    *,
    keys: Sequence[Mapped[Any]],
    after: Sequence[Any] | None,
    visible: Callable[[T], bool],
    limit: int,
    descending: bool = False,
    batch: int = BATCH,
) -> tuple[list[T], bool]:
    """Up to ``limit`` rows of ``query`` that ``visible`` admits, ordered by ``keys`` (mapped
    columns, ``col(Model.field)``, which together identify a row), after the row whose key
    values are ``after``; and whether more such rows follow."""
    ordered = query.order_by(*(key.desc() if descending else key.asc() for key in keys))
    names = [cast(QueryableAttribute[Any], key).key for key in keys]
    cursor = tuple(after) if after is not None else None
    shown: list[T] = []
    while len(shown) <= limit:
        page = ordered if cursor is None else ordered.where(beyond(keys, cursor, descending))
        rows = session.exec(page.limit(batch)).all()
        shown.extend(row for row in rows if visible(row))
        if len(rows) < batch:
            break
        cursor = tuple(getattr(rows[-1], name) for name in names)
    return shown[:limit], len(shown) > limit


def beyond(
    keys: Sequence[Mapped[Any]], cursor: Sequence[Any], descending: bool
) -> ColumnElement[bool]:
    """Rows strictly after ``cursor`` in the order of ``keys``: k1 > v1, or k1 = v1 and
    the rest beyond the rest (written out, not as a row value, so every database uses the
    index)."""
    first, value = keys[0], cursor[0]
    past = first < value if descending else first > value
    if len(keys) == 1:
        return past
    return or_(past, and_(first == value, beyond(keys[1:], cursor[1:], descending)))
