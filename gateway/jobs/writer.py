"""Group commit for job submissions.

A submission's gates run in its request's thread (gateway.jobs.service). What it writes,
the job row, its first events and its audit event, goes to this one writer thread, which
writes every submission that queued up meanwhile in one transaction:

    BEGIN; one SELECT re-checking the batch's base models, sources, files and each
    tenant's quota figures; one INSERT per table; COMMIT.

Each submission still lands whole or not at all, and each is still decided inside the
transaction that would insert it: a base model retired, a source revoked or a file erased
since the request read them is refused, and the quotas count the batch's earlier
submissions. The re-checks are the request's own gates (gateway.jobs.gates), given what
the writer re-read; the quotas are decided here only. On SQLite, whose one write lock a
transaction per request would make every submission queue for, a batch pays for the
lock, the statements and the commit once.

A submission the writer refuses comes back to its request, which audits the refusal and
answers it. If the batch's transaction fails, nothing of it was written and every request
in it gets 503 ``database_error``. A request that stops waiting before its submission was
taken withdraws it, so a 503 after ``write_timeout`` never hides a job that lands later.
"""

from __future__ import annotations

import calendar
import datetime as dt
import hashlib
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog
from sqlalchemy import (
    CompoundSelect,
    Engine,
    Table,
    and_,
    bindparam,
    func,
    insert,
    literal,
    select,
    text,
    union_all,
)
from sqlalchemy import inspect as sa_inspect
from sqlmodel import Session, SQLModel, col

from audit import chain
from gateway import metrics
from gateway.base_models.models import RegisteredBaseModel
from gateway.data_sources.models import DataSource
from gateway.errors import ServiceUnavailable
from gateway.files.models import TrainingFile
from gateway.jobs import gates
from gateway.jobs.gates import Outcome
from gateway.jobs.models import ACTIVE_STATUSES, FineTuningJob, JobEvent

log = structlog.get_logger()

MAX_BATCH = 64
WRITE_TIMEOUT_SECONDS = 30.0
_PENDING, _TAKEN, _WITHDRAWN, _FAILED = "pending", "taken", "withdrawn", "failed"


def _table(model: type[SQLModel]) -> Table:
    table = sa_inspect(model).local_table
    assert isinstance(table, Table)
    return table


# (attribute, column) pairs: the INSERTs below are Core statements, which name columns
# (``user_metadata`` is stored as ``metadata``); the ORM's bulk path cost more than them.
_JOB_COLUMNS = tuple(
    (attribute.key, attribute.columns[0].key)
    for attribute in sa_inspect(FineTuningJob).column_attrs
)
_INSERT_JOBS = insert(_table(FineTuningJob))
_INSERT_EVENTS = insert(_table(JobEvent))


@dataclass
class Submission:
    """One governed job, its gates passed, waiting to be written."""

    job: FineTuningJob
    messages: list[str]
    audit: dict[str, Any]  # chain.enqueue's keyword arguments
    source_ids: list[str]
    file_ids: list[str]
    refused: Outcome | None = None  # the gate that refused it in the write transaction
    _gate_decisions: list[dict[str, Any]] = field(default_factory=list)
    _state: str = _PENDING
    _done: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._gate_decisions = list(self.job.decisions)

    def _take(self) -> bool:
        with self._lock:
            if self._state != _PENDING:
                return False
            self._state = _TAKEN
            return True

    def _withdraw(self) -> bool:
        with self._lock:
            if self._state != _PENDING:
                return False
            self._state = _WITHDRAWN
            return True


def month_start(now: float) -> int:
    today = dt.datetime.fromtimestamp(now, dt.UTC)
    return calendar.timegm((today.year, today.month, 1, 0, 0, 0))


# Built once; one statement answers the whole batch. Each row: (kind, key, figure).
_FIGURES: CompoundSelect[str, str, float] = union_all(
    select(literal("base_model_active"), col(RegisteredBaseModel.name), literal(0.0)).where(
        col(RegisteredBaseModel.name).in_(bindparam("base_models", expanding=True)),
        col(RegisteredBaseModel.status) == "active",
    ),
    select(literal("source_approved"), col(DataSource.id), literal(0.0)).where(
        col(DataSource.id).in_(bindparam("source_ids", expanding=True)),
        col(DataSource.status) == "approved",
    ),
    select(literal("file_erased"), col(TrainingFile.id), literal(0.0)).where(
        col(TrainingFile.id).in_(bindparam("file_ids", expanding=True)),
        col(TrainingFile.content_deleted_at).is_not(None),
    ),
    select(literal("active_jobs"), col(FineTuningJob.tenant), func.count() * 1.0)
    .where(
        col(FineTuningJob.tenant).in_(bindparam("tenants", expanding=True)),
        col(FineTuningJob.status).in_(ACTIVE_STATUSES),
    )
    .group_by(col(FineTuningJob.tenant)),
    select(
        literal("device_seconds"),
        col(FineTuningJob.tenant),
        func.coalesce(func.sum(col(FineTuningJob.estimated_device_seconds)), 0.0),
    )
    .where(
        and_(
            col(FineTuningJob.tenant).in_(bindparam("tenants", expanding=True)),
            col(FineTuningJob.created_ns) >= bindparam("month_start_ns"),
        ),
    )
    .group_by(col(FineTuningJob.tenant)),
)


class SubmissionWriter:
    def __init__(
        self,
        engine: Engine,
        *,
        on_committed: Callable[[list[Submission]], None],
        quota_concurrent_jobs: int,
        quota_device_hours_per_month: float,
        max_batch: int = MAX_BATCH,
        write_timeout: float = WRITE_TIMEOUT_SECONDS,
    ) -> None:
        self.engine = engine
        self.on_committed = on_committed
        self.quota_concurrent_jobs = quota_concurrent_jobs
        self.quota_device_hours_per_month = quota_device_hours_per_month
        self.max_batch = max_batch
        self.write_timeout = write_timeout
        self._queue: queue.SimpleQueue[Submission | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._stopped = False

    # --- the requests' side

    def write(self, submission: Submission) -> None:
        """Blocks until the submission is written or refused (``submission.refused``);
        raises ServiceUnavailable when it could not be written."""
        self._ensure_started()
        self._queue.put(submission)
        if not submission._done.wait(self.write_timeout):
            if submission._withdraw():
                raise ServiceUnavailable(
                    "the job could not be recorded in time; retry", code="database_busy"
                )
            submission._done.wait()  # taken: its transaction is ending, wait for the outcome
        if submission._state == _FAILED:
            raise ServiceUnavailable("the job could not be recorded; retry", code="database_error")

    def _ensure_started(self) -> None:
        if self._stopped:  # nobody would take it
            raise ServiceUnavailable("the gateway is stopping", code="shutting_down")
        if self._thread is not None:
            return
        with self._start_lock:
            if self._stopped:
                raise ServiceUnavailable("the gateway is stopping", code="shutting_down")
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="job-writer", daemon=True)
                self._thread.start()

    @property
    def healthy(self) -> bool:
        """Not stopped, and its thread (started on the first submission) still running."""
        thread = self._thread
        return not self._stopped and (thread is None or thread.is_alive())

    def stop(self, timeout: float = 30.0) -> None:
        """Writes what is queued, then ends the thread."""
        with self._start_lock:
            self._stopped = True
            thread = self._thread
        if thread is not None:
            self._queue.put(None)
            thread.join(timeout)

    # --- the writer's side

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            batch: list[Submission] = []
            stopping = first is None
            if first is not None and first._take():
                batch.append(first)
            while len(batch) < self.max_batch:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stopping = True
                elif more._take():
                    batch.append(more)
            if batch:
                try:
                    self._write(batch)
                except Exception:  # the thread must outlive any batch
                    log.exception("jobs.writer_failed", submissions=len(batch))
                    _fail(batch)
            if stopping:
                return

    def _write(self, batch: list[Submission]) -> None:
        """One transaction for the batch. If it fails and holds more than one submission,
        each is tried again alone, so one that cannot be written (say, an audit event the
        trail refuses) fails only its own request."""
        started = time.perf_counter()
        try:
            with Session(self.engine) as session:
                accepted = _decide(
                    session,
                    batch,
                    concurrent_jobs=self.quota_concurrent_jobs,
                    device_hours_per_month=self.quota_device_hours_per_month,
                )
                if accepted:
                    session.execute(_INSERT_JOBS, [_column_values(item.job) for item in accepted])
                    session.execute(
                        _INSERT_EVENTS,
                        [
                            {
                                "job_id": item.job.id,
                                "created_at": item.job.created_at,
                                "level": "info",
                                "type": "message",
                                "message": message,
                                "data": None,
                            }
                            for item in accepted
                            for message in item.messages
                        ],
                    )
                    for item in accepted:
                        chain.enqueue(session, **item.audit)
                session.commit()
        except Exception:
            if len(batch) > 1:
                log.warning("jobs.batch_failed", submissions=len(batch), retry="one_by_one")
                for item in batch:
                    self._write([item])
                return
            log.exception("jobs.submission_not_written", job_id=batch[0].job.id)
            _fail(batch)
            return
        metrics.AUDIT_EVENTS.inc(len(accepted))
        metrics.JOB_WRITE_BATCH.observe(len(batch))
        for item in batch:
            item._done.set()
        if accepted:
            try:
                self.on_committed(accepted)
            except Exception:  # the jobs are written; a follow-up must not undo the answers
                log.exception("jobs.after_commit_failed", jobs=len(accepted))
        log.debug(
            "jobs.batch_written",
            submissions=len(batch),
            accepted=len(accepted),
            ms=round((time.perf_counter() - started) * 1000, 2),
        )


def _fail(batch: list[Submission]) -> None:
    for item in batch:
        if not item._done.is_set():
            item._state = _FAILED
            item._done.set()


def _column_values(job: FineTuningJob) -> dict[str, Any]:
    return {column: getattr(job, attribute) for attribute, column in _JOB_COLUMNS}


def lock_tenants(session: Session, tenants: list[str]) -> None:
    """On PostgreSQL, serialises each tenant's quota decisions across gateways (SQLite
    already runs one write transaction at a time): submissions' and resumes'. Sorted, so
    batches never deadlock."""
    if session.get_bind().dialect.name != "postgresql":
        return
    for tenant in sorted(tenants):
        key = int.from_bytes(
            hashlib.sha256(f"quota:{tenant}".encode()).digest()[:8], "big", signed=True
        )
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})


@dataclass
class _Figures:
    """What the batch's one SELECT found: the usable rows among those it names, and each
    tenant's active jobs and estimated device-seconds this month."""

    active_bases: set[str]
    approved_sources: set[str]
    erased_files: set[str]
    active_jobs: dict[str, int]
    device_seconds: dict[str, float]


def _read_figures(session: Session, batch: list[Submission], tenants: list[str]) -> _Figures:
    rows = session.execute(
        _FIGURES,
        {
            "base_models": sorted({item.job.base_model for item in batch}),
            "source_ids": sorted({sid for item in batch for sid in item.source_ids}),
            "file_ids": sorted({fid for item in batch for fid in item.file_ids}),
            "tenants": tenants,
            "month_start_ns": month_start(time.time()) * 1_000_000_000,
        },
    ).all()
    found: dict[str, dict[str, float]] = {}
    for kind, key, figure in rows:
        found.setdefault(kind, {})[key] = float(figure or 0.0)
    return _Figures(
        active_bases=set(found.get("base_model_active", {})),
        approved_sources=set(found.get("source_approved", {})),
        erased_files=set(found.get("file_erased", {})),
        active_jobs={key: int(value) for key, value in found.get("active_jobs", {}).items()},
        device_seconds={
            tenant: found.get("device_seconds", {}).get(tenant, 0.0) for tenant in tenants
        },
    )


def _rechecks(item: Submission, figures: _Figures) -> list[Outcome]:
    """The gates whose facts may have changed since the request read them, on what this
    transaction sees. Each usable state has one way out: a base model is retired, a source
    revoked, a file erased."""
    job = item.job
    base_status = "active" if job.base_model in figures.active_bases else "retired"
    checks = [gates.base_model_active(job.base_model, status=base_status)]
    checks += [
        gates.source_approved(
            sid, status="approved" if sid in figures.approved_sources else "revoked"
        )
        for sid in item.source_ids
    ]
    for fid in item.file_ids:
        erased = fid in figures.erased_files
        param = "training_file" if fid == job.training_file else "validation_file"
        checks.append(
            gates.file_usable(
                fid, status="deleted" if erased else "processed", stored=not erased, param=param
            )
        )
    return checks


def _decide(
    session: Session,
    batch: list[Submission],
    *,
    concurrent_jobs: int,
    device_hours_per_month: float,
) -> list[Submission]:
    """Re-checks and quotas for the whole batch, in order; returns those accepted."""
    tenants = sorted({item.job.tenant for item in batch})
    lock_tenants(session, tenants)
    figures = _read_figures(session, batch, tenants)
    accepted = []
    for item in batch:
        job = item.job
        item.refused = None  # decided afresh when a batch is retried
        active = figures.active_jobs.get(job.tenant, 0)
        quotas = [
            gates.concurrent_jobs(active, limit=concurrent_jobs),
            gates.device_hours(
                figures.device_seconds[job.tenant],
                requested_seconds=job.estimated_device_seconds,
                limit_hours=device_hours_per_month,
            ),
        ]
        item.refused = next((c for c in [*_rechecks(item, figures), *quotas] if not c.passed), None)
        if item.refused is not None:
            continue
        quota_figures = {key: value for outcome in quotas for key, value in outcome.figures.items()}
        job.decisions = [
            *item._gate_decisions,
            {"kind": "gate", "gate": "quota", "passed": True, **quota_figures},
        ]
        figures.active_jobs[job.tenant] = active + 1
        figures.device_seconds[job.tenant] += job.estimated_device_seconds
        accepted.append(item)
    return accepted
