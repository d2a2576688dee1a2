"""Verification of the whole trail that reports its progress while it runs.

The verdict is audit.verify.verify_chain's, reached by the same fast path
(audit.verify_fast.verify_snapshot over the rows of one snapshot, in this process); only
the rows pass through ``ReportingRows`` on their way, which tells ``report(checked,
total)`` after each fetched batch has been checked. So a caller hears of the snapshot's
size at once and then every few thousand events, however long the chain.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

from sqlalchemy import Engine

from audit import verify_fast
from audit.verdict import Row, VerifyResult
from audit.verify import _snapshot
from audit.verify_fast import DEFAULT_CHUNK, DatabaseRows, RowSource

Report = Callable[[int, int], None]


class ReportingRows:
    """A RowSource that reports the last seq of each batch once its consumer has checked
    it (the consumer asks for the next batch only after checking the one before)."""

    def __init__(self, rows: RowSource, report: Callable[[object], None]) -> None:
        self.rows = rows
        self.text_as_bytes = rows.text_as_bytes
        self.report = report

    def batches(self, start: int, end: int) -> Iterator[Sequence[Row]]:
        last = None
        for batch in self.rows.batches(start, end):
            if last is not None:
                self.report(last)
            yield batch
            last = batch[-1][0] if batch else last
        if last is not None:
            self.report(last)


def verify_chain_reporting(
    engine: Engine,
    *,
    report: Report,
    public_key_pem: bytes | str | None = None,
    chunk_size: int = DEFAULT_CHUNK,
) -> VerifyResult:
    """audit.verify.verify_chain (checkpoints and signatures included, one process), with
    ``report(checked, total)``: first (0, total) as soon as the snapshot is read."""
    with _snapshot(engine) as (connection, snapshot):
        total = snapshot.head_seq
        report(0, total)

        def checked(seq: object) -> None:
            if isinstance(seq, int):  # a tampered row may hold anything: the verdict says
                report(min(max(seq, 0), total), total)

        rows = ReportingRows(DatabaseRows(connection, engine.dialect.name), checked)
        return verify_fast.verify_snapshot(
            snapshot,
            rows,
            check_checkpoints=True,
            public_key_pem=public_key_pem,
            deep=False,
            chunk_size=chunk_size,
        )
