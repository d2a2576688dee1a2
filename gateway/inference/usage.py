"""Usage on the audit trail: one `inference.call` audit event and one `inference_calls`
row per call, written in batches by one writer thread (group commit), so that neither the
audit trail nor SQLite's one write lock becomes the bottleneck of inference. And the reads
over those rows: usage per model, traffic per version.

Each batch is one transaction: the usage rows, the kept transcripts and the audit events
(queued through audit.chain.enqueue, the enqueue path every governed change takes, chained
by the sequencer after the commit) land together or not at all. A non-streaming call
waits for its batch to commit before its answer is sent (``write``) unless
INFERENCE_AWAIT_RECORD is off (``submit``); a stream's record is written when the stream
ends (its bytes are gone by then: a failure is logged and counted). A batch is whatever
queued while the last one was written, so batches grow with the load. The sequencer is
told of committed events at most every ``notify_every`` seconds (and at once after an idle
spell), so that under load it chains large rounds rather than one per batch. Expired
transcripts are deleted by the same thread, at most once a minute."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog
from sqlalchemy import Engine, Table, case, delete, func, insert
from sqlalchemy import inspect as sa_inspect
from sqlmodel import Session, SQLModel, col, select

from audit import chain
from gateway import metrics
from gateway.errors import ServiceUnavailable
from gateway.inference.models import InferenceCall, InferenceTranscript
from gateway.inference.schemas import GroupBy, ModelUsage, UsageGroup, VersionTraffic

log = structlog.get_logger()

MAX_BATCH = 512
WRITE_TIMEOUT_SECONDS = 30.0
PURGE_EVERY_SECONDS = 60.0
NOTIFY_EVERY_SECONDS = 0.02
SYSTEM_ACTOR = "system:inference"


def _table(model: type[SQLModel]) -> Table:
    table = sa_inspect(model).local_table
    assert isinstance(table, Table)
    return table


_INSERT_CALLS = insert(_table(InferenceCall))
_INSERT_TRANSCRIPTS = insert(_table(InferenceTranscript))


@dataclass
class CallRecord:
    """What one call leaves: its usage row, its audit event (chain.enqueue's keyword
    arguments) and, when the model keeps text, its transcript."""

    row: dict[str, Any]
    audit: dict[str, Any]
    transcript: dict[str, Any] | None = None
    _loop: asyncio.AbstractEventLoop | None = None
    _future: asyncio.Future[None] | None = None
    _done: threading.Event | None = None  # wait_idle's markers only
    failed: bool = False


class UsageWriter:
    def __init__(
        self,
        engine: Engine,
        *,
        notify: Callable[[], None],
        max_batch: int = MAX_BATCH,
        write_timeout: float = WRITE_TIMEOUT_SECONDS,
        notify_every: float = NOTIFY_EVERY_SECONDS,
    ) -> None:
        self.engine = engine
        self.notify = notify
        self.max_batch = max_batch
        self.write_timeout = write_timeout
        self.notify_every = notify_every
        self._notified = 0.0  # when the sequencer was last told
        self._unnotified = False  # committed events it was not told of yet
        self.written = 0
        self.failures = 0
        self._queue: queue.SimpleQueue[CallRecord | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._stopped = False
        self._last_purge = 0.0

    def submit(self, record: CallRecord) -> None:
        """Queues the record; returns at once."""
        self._ensure_started()
        self._queue.put(record)

    @property
    def backlog(self) -> int:
        """Records queued and not yet taken into a batch."""
        return self._queue.qsize()

    async def write(self, record: CallRecord) -> None:
        """Queues the record and waits until its batch committed (503 when it could not
        be written). A caller cancelled meanwhile leaves the record queued: it is
        written all the same."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        record._loop, record._future = loop, future
        self.submit(record)
        expiry = loop.call_later(self.write_timeout, _expire, future)
        try:
            await future
        except TimeoutError:
            raise ServiceUnavailable(
                "the call could not be recorded in time; retry", code="database_busy"
            ) from None
        finally:
            expiry.cancel()
        if record.failed:
            raise ServiceUnavailable("the call could not be recorded; retry", code="database_error")

    def _ensure_started(self) -> None:
        if self._stopped:
            raise ServiceUnavailable("the gateway is stopping", code="shutting_down")
        if self._thread is not None:
            return
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="inference-usage-writer", daemon=True
                )
                self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Writes what is queued, then ends the thread."""
        with self._lock:
            self._stopped = True
            thread = self._thread
        if thread is not None:
            self._queue.put(None)
            thread.join(timeout)

    def wait_idle(self, timeout: float = 10.0) -> None:
        """Returns once everything submitted so far is written (tests, benches)."""
        marker = CallRecord(row={}, audit={}, _done=threading.Event())
        marker.failed = True  # a marker, not a call
        self._ensure_started()
        self._queue.put(marker)
        assert marker._done is not None
        marker._done.wait(timeout)

    # --- the writer's side

    def _run(self) -> None:
        while True:
            try:
                first = self._queue.get(timeout=self._notify_wait())
            except queue.Empty:
                self._notify()  # what the last batches committed, now to be chained
                continue
            stopping = first is None
            batch: list[CallRecord] = [] if first is None else [first]
            while len(batch) < self.max_batch:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stopping = True
                else:
                    batch.append(more)
            markers = [item for item in batch if not item.row]
            calls = [item for item in batch if item.row]
            if calls:
                try:
                    self._write(calls)
                except Exception:  # the thread must outlive any batch
                    log.exception("inference.usage_writer_failed", calls=len(calls))
                    _finish(calls, failed=True)
            self._purge_when_due()
            if markers or stopping or time.monotonic() - self._notified >= self.notify_every:
                self._notify()
            _finish(markers, failed=True)
            if stopping:
                return

    def _notify_wait(self) -> float | None:
        """How long the thread may wait for the next record: forever, unless committed
        events wait for the sequencer to be told."""
        if not self._unnotified:
            return None
        return max(0.0, self._notified + self.notify_every - time.monotonic())

    def _notify(self) -> None:
        """Wakes the sequencer for what was committed since the last time: at most once
        per ``notify_every`` under load, so that it chains in large rounds (each round is
        a transaction on the chain head, with a fixed cost) rather than one per batch."""
        if not self._unnotified:
            return
        self._notified = time.monotonic()
        self._unnotified = False
        try:
            self.notify()
        except Exception:
            log.exception("inference.notify_failed")

    def _write(self, batch: list[CallRecord]) -> None:
        try:
            with Session(self.engine) as session:
                session.execute(_INSERT_CALLS, [item.row for item in batch])
                transcripts = [item.transcript for item in batch if item.transcript]
                if transcripts:
                    session.execute(_INSERT_TRANSCRIPTS, transcripts)
                for item in batch:
                    chain.enqueue(session, **item.audit)
                session.commit()
        except Exception:
            if len(batch) > 1:
                log.warning("inference.usage_batch_failed", calls=len(batch), retry="one_by_one")
                for item in batch:
                    self._write([item])
                return
            self.failures += 1
            log.exception("inference.call_not_recorded", call_id=batch[0].row.get("id"))
            _finish(batch, failed=True)
            return
        self.written += len(batch)
        self._unnotified = True
        metrics.AUDIT_EVENTS.inc(len(batch))
        _finish(batch, failed=False)

    def _purge_when_due(self) -> None:
        now = time.monotonic()
        if now - self._last_purge < PURGE_EVERY_SECONDS:
            return
        self._last_purge = now
        try:
            if purge_expired(self.engine, now=int(time.time())):
                self._unnotified = True
        except Exception:
            log.exception("inference.transcript_purge_failed")


def _finish(batch: list[CallRecord], *, failed: bool) -> None:
    """Tells the batch's waiters: one wake-up per event loop, not one per call."""
    waiting: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
    for item in batch:
        if item.row:
            item.failed = failed
        if item._done is not None:
            item._done.set()
        if item._loop is not None and item._future is not None:
            waiting.setdefault(item._loop, []).append(item._future)
    for loop, futures in waiting.items():
        with contextlib.suppress(RuntimeError):  # that loop closed: nobody waits any more
            loop.call_soon_threadsafe(_resolve, futures)


def _expire(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_exception(TimeoutError())


def _resolve(futures: list[asyncio.Future[None]]) -> None:
    for future in futures:
        if not future.done():  # a waiter cancelled (client gone) or timed out
            future.set_result(None)


def purge_expired(engine: Engine, *, now: int) -> int:
    """Deletes the transcripts whose retention ended, audited per tenant."""
    expired = col(InferenceTranscript.expires_at) <= now
    removed = 0
    with Session(engine) as session:
        counts = session.execute(
            select(col(InferenceTranscript.tenant), func.count())
            .where(expired)
            .group_by(col(InferenceTranscript.tenant))
        ).all()
        if not counts:
            return 0
        session.execute(delete(InferenceTranscript).where(expired))
        for tenant, count in counts:
            removed += int(count)
            chain.enqueue(
                session,
                actor=SYSTEM_ACTOR,
                tenant=str(tenant),
                action="inference.transcripts_expired",
                resource="inference_transcripts",
                decision="allow",
                details={"removed": int(count), "before": now},
            )
        session.commit()
    log.info("inference.transcripts_expired", removed=removed)
    return removed


# --- reading ------------------------------------------------------------------------------


def _day(value: Any) -> str:
    return dt.datetime.fromtimestamp(int(value) * 86400, dt.UTC).date().isoformat()


def model_usage(
    session: Session,
    *,
    tenant: str,
    model_id: str,
    since: int | None,
    until: int | None,
    group_by: GroupBy | None,
) -> ModelUsage:
    """Calls served by ``model_id`` (the version, after any traffic split) in
    [since, until): calls, tokens and errors, in total and per user, purpose or UTC day."""
    errors = func.sum(case((col(InferenceCall.outcome) != "ok", 1), else_=0))
    figures = (
        func.count(),
        func.coalesce(func.sum(col(InferenceCall.prompt_tokens)), 0),
        func.coalesce(func.sum(col(InferenceCall.completion_tokens)), 0),
        func.coalesce(errors, 0),
    )
    key: Any = None
    if group_by == "user":
        key = col(InferenceCall.principal)
    elif group_by == "purpose":
        key = func.coalesce(col(InferenceCall.purpose), "")
    elif group_by == "day":
        key = col(InferenceCall.created_at) // 86400  # whole UTC days (/ is true division)
    columns = (key, *figures) if key is not None else (func.count(), *figures[1:])
    query = select(*columns).where(
        col(InferenceCall.tenant) == tenant, col(InferenceCall.model_version_id) == model_id
    )
    if since is not None:
        query = query.where(col(InferenceCall.created_at) >= since)
    if until is not None:
        query = query.where(col(InferenceCall.created_at) < until)
    groups: list[UsageGroup] = []
    if key is not None:
        for name, calls, prompt, completion, failed in session.execute(
            query.group_by(key).order_by(key)
        ).all():
            groups.append(
                UsageGroup(
                    key=_day(name) if group_by == "day" else str(name),
                    calls=int(calls),
                    prompt_tokens=int(prompt),
                    completion_tokens=int(completion),
                    total_tokens=int(prompt) + int(completion),
                    errors=int(failed),
                )
            )
        calls = sum(g.calls for g in groups)
        prompt = sum(g.prompt_tokens for g in groups)
        completion = sum(g.completion_tokens for g in groups)
        failed = sum(g.errors for g in groups)
    else:
        calls, prompt, completion, failed = session.execute(query).one()
    return ModelUsage(
        model_id=model_id,
        since=since,
        until=until,
        group_by=group_by,
        calls=int(calls),
        prompt_tokens=int(prompt),
        completion_tokens=int(completion),
        total_tokens=int(prompt) + int(completion),
        errors=int(failed),
        groups=groups,
    )


def version_traffic(
    session: Session,
    *,
    tenant: str,
    model_id: str,
    candidate_id: str | None,
    now: int | None = None,
) -> list[VersionTraffic]:
    """Of the calls naming ``model_id`` in the last hour and day, what each served version
    took: calls, share, errors and error rate, tokens, mean latency. The production version
    and the candidate are listed even when they served nothing."""
    now = int(time.time()) if now is None else now
    hour, day = now - 3600, now - 86400
    in_hour = func.sum(case((col(InferenceCall.created_at) >= hour, 1), else_=0))
    failed = func.sum(case((col(InferenceCall.outcome) != "ok", 1), else_=0))
    columns: list[Any] = [
        col(InferenceCall.model_version_id),
        func.count(),
        in_hour,
        failed,
        func.coalesce(
            func.sum(col(InferenceCall.prompt_tokens) + col(InferenceCall.completion_tokens)), 0
        ),
        func.avg(col(InferenceCall.latency_ms)),
    ]
    rows = session.execute(
        select(*columns)
        .where(
            col(InferenceCall.tenant) == tenant,
            col(InferenceCall.model_id) == model_id,
            col(InferenceCall.created_at) >= day,
            col(InferenceCall.model_version_id).is_not(None),
        )
        .group_by(col(InferenceCall.model_version_id))
    ).all()
    found: dict[str, tuple[Any, ...]] = {str(row[0]): tuple(row) for row in rows}
    for wanted in (model_id, candidate_id):
        if wanted is not None and wanted not in found:
            found[wanted] = (wanted, 0, 0, 0, 0, None)
    day_total = sum(int(row[1]) for row in found.values())
    hour_total = sum(int(row[2] or 0) for row in found.values())
    out = []
    for version, (_, calls, calls_hour, errors, tokens, latency) in sorted(found.items()):
        calls, calls_hour, errors = int(calls), int(calls_hour or 0), int(errors or 0)
        role = (
            "production"
            if version == model_id
            else "candidate"
            if version == candidate_id
            else "other"
        )
        out.append(
            VersionTraffic(
                model_version_id=version,
                role=role,
                calls_last_hour=calls_hour,
                calls_last_day=calls,
                share_last_hour=round(calls_hour / hour_total, 4) if hour_total else 0.0,
                share_last_day=round(calls / day_total, 4) if day_total else 0.0,
                errors_last_day=errors,
                error_rate_last_day=round(errors / calls, 4) if calls else 0.0,
                tokens_last_day=int(tokens or 0),
                mean_latency_ms_last_day=(
                    round(float(latency), 3) if latency is not None else None
                ),
            )
        )
    return out
