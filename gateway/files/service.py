"""Training files: streamed in, validated and described, stored content-addressed. Never
commits.

The upload is processed before the request's transaction writes anything (on SQLite a
write transaction holds the database's one write lock, and an upload can take minutes);
the data source is checked again, with the row and its audit event, at the end. Stored
content lives at ``<artifact_dir>/files/<tenant>/<data source>/<sha256>``: per source, so
that erasing one tenant's or one source's copy never touches another's identical bytes.
"""

from __future__ import annotations

import functools
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeVar

import anyio
import structlog
from sqlalchemy import BigInteger, String, column, or_, table
from sqlmodel import Session, col, select

from audit.encoding import now_ts
from gateway.audit_api.service import record_allowed
from gateway.authz import Authorized, allows
from gateway.config import Settings
from gateway.data_sources.service import get_in_tenant, require_usable
from gateway.db import after_commit, on_rollback, read_only
from gateway.errors import (
    Conflict,
    Gone,
    InsufficientStorage,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
)
from gateway.files.models import TrainingFile
from gateway.files.schemas import FILE_ID, PURPOSES, RESULTS_PURPOSE
from gateway.files.upload import MultipartUpload
from gateway.pagination import visible_page
from gateway.runtime import Runtime
from gateway.security import Principal
from ingest import (
    FileTooLarge,
    IngestError,
    IngestLimits,
    IngestResult,
    IngestSession,
    content_path,
    fingerprint_path,
)
from ingest import InsufficientStorage as StoreFull

log = structlog.get_logger()

VISIBLE_WITH = "read"
T = TypeVar("T")


async def _in_thread(function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Blocking work (the database, hashing and scanning) off the event loop."""
    return await anyio.to_thread.run_sync(functools.partial(function, *args, **kwargs))


def new_file_id() -> str:
    return f"file-{secrets.token_hex(12)}"


def source_dir(settings: Settings, *, tenant: str, data_source_id: str) -> Path:
    return settings.artifact_dir / "files" / tenant / data_source_id


def stored_content(settings: Settings, row: TrainingFile) -> Path | None:
    """Where the file's usable content is on disk, or None when there is none (refused,
    or erased)."""
    if row.content_sha256 is None or row.content_deleted_at is not None:
        return None
    directory = source_dir(settings, tenant=row.tenant, data_source_id=row.data_source_id)
    return content_path(directory, row.content_sha256)


@dataclass(frozen=True)
class _SourceSnapshot:
    id: str
    pii_action: str


def _usable_source(state: Runtime, *, tenant: str, data_source_id: str) -> _SourceSnapshot:
    with Session(read_only(state.engine)) as session:
        source = get_in_tenant(session, tenant=tenant, data_source_id=data_source_id)
        require_usable(source)
        return _SourceSnapshot(id=source.id, pii_action=source.pii_action)


def _ingest_error(exc: IngestError) -> Exception:
    if isinstance(exc, FileTooLarge):
        return PayloadTooLarge(exc.message, code=exc.code, param="file", details=exc.details)
    if isinstance(exc, StoreFull):
        return InsufficientStorage(exc.message, code=exc.code, details=exc.details)
    return InvalidRequest(exc.message, code=exc.code, param="file", details=exc.details)


async def upload(
    session: Session, *, state: Runtime, authorized: Authorized, upload: MultipartUpload
) -> TrainingFile:
    settings = state.settings
    principal = authorized.principal
    purpose = upload.fields["purpose"]
    if purpose not in PURPOSES:
        raise InvalidRequest(
            f"purpose must be one of {', '.join(PURPOSES)}",
            code="invalid_purpose",
            param="purpose",
        )
    source = await _in_thread(
        _usable_source, state, tenant=principal.tenant, data_source_id=upload.fields["data_source"]
    )
    directory = source_dir(settings, tenant=principal.tenant, data_source_id=source.id)
    limits = IngestLimits(
        max_bytes=settings.max_upload_bytes,
        max_line_bytes=settings.max_upload_line_bytes,
        min_free_bytes=settings.upload_min_free_bytes,
    )
    pool = await _in_thread(state.scan_pool)
    try:
        ingesting = await _in_thread(
            IngestSession,
            dest_dir=directory,
            pii_action=source.pii_action,
            limits=limits,
            pool=pool,
        )
        try:
            async for block in upload.file_blocks():
                await _in_thread(ingesting.feed, block)
            result = await _in_thread(ingesting.finish)
        except BaseException:
            ingesting.abort()
            raise
    except IngestError as exc:
        raise _ingest_error(exc) from None
    on_rollback(
        session,
        lambda: _discard_unreferenced(
            state,
            tenant=principal.tenant,
            data_source_id=source.id,
            directory=directory,
            result=result,
        ),
    )
    return await _in_thread(
        _record_upload,
        session,
        authorized=authorized,
        data_source_id=source.id,
        purpose=purpose,
        filename=upload.filename or "upload.jsonl",
        result=result,
    )


def _record_upload(
    session: Session,
    *,
    authorized: Authorized,
    data_source_id: str,
    purpose: str,
    filename: str,
    result: IngestResult,
) -> TrainingFile:
    principal = authorized.principal
    # Checked again in the transaction that records the file: a source revoked while the
    # bytes were streaming gets nothing new.
    source = get_in_tenant(
        session, tenant=principal.tenant, data_source_id=data_source_id, for_update=True
    )
    require_usable(source)
    usable = result.redacted or result.stored
    if usable is not None and not usable.path.is_file():
        # An erasure of identical bytes in this source removed them after they were
        # stored: recording a file over missing content would hand out a broken file.
        raise Conflict(
            "the upload raced an erasure of the same content; upload it again",
            code="upload_raced_erasure",
        )
    if result.redacted is not None and result.stored is not None:
        # The source redacts: what is kept is the redacted derivative. The upload's own
        # bytes (with the personal data) are not kept; the lineage keeps their hash.
        _remove_content(result.stored.path)
    row = TrainingFile(
        id=new_file_id(),
        tenant=principal.tenant,
        data_source_id=source.id,
        purpose=purpose,
        filename=filename,
        bytes=result.bytes,
        sha256=result.sha256,
        status=result.status,
        status_details=result.status_details,
        pii_action=source.pii_action,
        report=result.report.to_dict(),
        content_sha256=usable.sha256 if usable else None,
        content_bytes=usable.bytes if usable else None,
        examples=result.report.examples,
        redaction=result.lineage.to_dict() if result.lineage else None,
        created_at=int(time.time()),
        created_by=principal.sub,
    )
    session.add(row)
    session.flush()
    report = result.report
    record_allowed(
        session,
        authorized=authorized,
        action="file.uploaded" if result.status == "processed" else "file.rejected",
        details={
            "file_id": row.id,
            "data_source": source.id,
            "purpose": purpose,
            "sha256": row.sha256,
            "bytes": row.bytes,
            "status": row.status,
            "format": report.format,
            "examples": report.examples,
            "faults": report.fault_count,
            "pii_action": source.pii_action,
            "pii_findings": _pii_counts(row.report),
            "content_sha256": row.content_sha256,
            "redaction": _lineage_summary(row.redaction),
        },
    )
    log.info(
        "file.uploaded",
        file_id=row.id,
        data_source=source.id,
        sha256=row.sha256,
        status=row.status,
        examples=report.examples,
    )
    return row


def _pii_counts(report: dict[str, Any]) -> list[dict[str, Any]]:
    # A list of {type, findings}: a kind's name ("email", "secret") as a key would read
    # as a value of that kind to the audit trail's content guard.
    pii = report.get("pii") or {}
    return [
        {"type": kind, "findings": entry["findings"]}
        for kind, entry in (pii.get("by_type") or {}).items()
    ]


def _lineage_summary(lineage: dict[str, Any] | None) -> dict[str, Any] | None:
    if lineage is None:
        return None
    return {
        key: lineage[key]
        for key in ("input_sha256", "output_sha256", "recogniser_set", "settings", "redacted_lines")
    }


def _remove_content(path: Path) -> None:
    path.unlink(missing_ok=True)
    fingerprint_path(path).unlink(missing_ok=True)


def _discard_unreferenced(
    state: Runtime,
    *,
    tenant: str,
    data_source_id: str,
    directory: Path,
    result: IngestResult,
) -> None:
    """After a failed record: remove what this upload stored unless a recorded file of the
    same source (committed earlier, with the same bytes) still points at it."""
    for stored in (result.stored, result.redacted):
        if stored is None:
            continue
        with Session(read_only(state.engine)) as fresh:
            referenced = fresh.scalars(
                select(col(TrainingFile.id)).where(
                    col(TrainingFile.tenant) == tenant,
                    col(TrainingFile.data_source_id) == data_source_id,
                    col(TrainingFile.content_sha256) == stored.sha256,
                    col(TrainingFile.content_deleted_at).is_(None),
                )
            ).first()
        if referenced is None:
            _remove_content(content_path(directory, stored.sha256))
            log.info("file.discarded", sha256=stored.sha256, data_source=data_source_id)


# --- reading ---------------------------------------------------------------------------------


def data_source_of(state: Runtime, principal: Principal, values: dict[str, str]) -> dict[str, str]:
    """The authorization resolver for /v1/files/{file_id}...: a file is governed by its
    data source. A file that does not exist (or is another tenant's) resolves to the
    collection, so a caller with no read grant at all is refused before learning more."""
    file_id = values.get("file_id", "")
    source_id = None
    if FILE_ID.match(file_id):
        with Session(read_only(state.engine)) as session:
            source_id = session.scalars(
                select(col(TrainingFile.data_source_id)).where(
                    col(TrainingFile.id) == file_id, col(TrainingFile.tenant) == principal.tenant
                )
            ).first()
    return {"data_source": source_id or "*"}


def governor_of(state: Runtime, principal: Principal, values: dict[str, str]) -> dict[str, str]:
    """The authorization resolver for reading a file: a training file is governed by its
    data source (as data_source_of), a job's result file by its job. A file that does not
    exist (or is another tenant's) resolves to the data source collection."""
    file_id = values.get("file_id", "")
    found = None
    if FILE_ID.match(file_id):
        with Session(read_only(state.engine)) as session:
            found = session.exec(
                select(
                    TrainingFile.data_source_id, TrainingFile.purpose, TrainingFile.report
                ).where(
                    col(TrainingFile.id) == file_id, col(TrainingFile.tenant) == principal.tenant
                )
            ).first()
    if found is None:
        return {"governor": "ds:*"}
    source_id, purpose, report = found
    job_id = _results_job(purpose, report)
    return {"governor": f"job:{job_id}" if job_id else f"ds:{source_id}"}


def _results_job(purpose: str, report: Mapping[str, Any] | None) -> str | None:
    """The job a result file belongs to; None for a training file."""
    if purpose != RESULTS_PURPOSE:
        return None
    job_id = (report or {}).get("job_id")
    return job_id if isinstance(job_id, str) else None


def get_in_tenant_file(
    session: Session, *, tenant: str, file_id: str, for_update: bool = False
) -> TrainingFile:
    row = None
    if FILE_ID.match(file_id):
        row = session.get(TrainingFile, file_id, with_for_update=for_update)
    if row is None or row.tenant != tenant:
        raise NotFound(f"file {file_id!r} not found", code="file_not_found", param="file_id")
    return row


def get_visible(session: Session, *, authorized: Authorized, file_id: str) -> TrainingFile:
    return get_in_tenant_file(session, tenant=authorized.principal.tenant, file_id=file_id)


def open_content(
    session: Session, *, state: Runtime, authorized: Authorized, file_id: str
) -> tuple[TrainingFile, Path]:
    row = get_visible(session, authorized=authorized, file_id=file_id)
    if row.deleted_at is not None:
        raise Gone("this file was deleted", code="file_deleted")
    if row.content_deleted_at is not None:
        raise Gone(
            "this file's content was erased",
            code="content_erased",
            details={"erasure_request": row.erasure_request_id},
        )
    path = stored_content(state.settings, row)
    if path is None:
        raise Conflict(
            "this file was refused and its content was not kept",
            code="file_not_stored",
            details={"status": row.status},
        )
    if not path.is_file():
        log.error("file.content_missing", file_id=row.id, content_sha256=row.content_sha256)
        raise Gone("this file's content is missing from the store", code="content_missing")
    record_allowed(
        session,
        authorized=authorized,
        action="file.content_read",
        details={"file_id": row.id, "content_sha256": row.content_sha256},
    )
    return row, path


def list_visible(
    session: Session,
    *,
    state: Runtime,
    authorized: Authorized,
    purpose: str | None,
    data_source: str | None,
    after: str | None,
    limit: int,
    order: str,
) -> tuple[list[TrainingFile], bool]:
    """The tenant's files whose data source the caller may read, newest first by default
    (OpenAI's order), ``after`` a file id as the cursor."""
    principal = authorized.principal
    readable: dict[str, bool] = {}

    def may_read(row: TrainingFile) -> bool:
        job_id = _results_job(row.purpose, row.report)
        governor = f"job:{job_id}" if job_id else f"ds:{row.data_source_id}"
        if governor not in readable:
            readable[governor] = allows(state.policy, principal, governor, VISIBLE_WITH)
        return readable[governor]

    query = select(TrainingFile).where(col(TrainingFile.tenant) == principal.tenant)
    if purpose is not None:
        query = query.where(col(TrainingFile.purpose) == purpose)
    if data_source is not None:
        query = query.where(col(TrainingFile.data_source_id) == data_source)
    cursor = None
    if after is not None:
        anchor = get_in_tenant_file(session, tenant=principal.tenant, file_id=after)
        cursor = (anchor.created_at, anchor.id)
    return visible_page(
        session,
        query,
        keys=[col(TrainingFile.created_at), col(TrainingFile.id)],
        descending=order == "desc",
        after=cursor,
        visible=may_read,
        limit=limit,
    )


def erase_content(
    session: Session,
    *,
    settings: Settings,
    row: TrainingFile,
    actor: str,
    erasure_request_id: str | None,
) -> list[TrainingFile]:
    """Erasure: removes the file's content (and fingerprint) from disk, and marks every
    live file of the tenant's source that shares those bytes (they hold the same data).
    The rows keep their hashes, so the trail and the lineage of anything trained on them
    still resolve. The disk changes before the commit: should the commit fail, a row still
    says "processed" over missing content (reads answer 410), which is visible and
    repeatable; the other order could leave personal data on disk behind a row that says
    it is gone. Retention (gateway.retention) calls it too, with no erasure request."""
    path = stored_content(settings, row)
    erased = [row]
    if row.content_sha256 is not None:
        erased = list(
            session.scalars(
                select(TrainingFile)
                .where(
                    col(TrainingFile.tenant) == row.tenant,
                    col(TrainingFile.data_source_id) == row.data_source_id,
                    col(TrainingFile.content_sha256) == row.content_sha256,
                    col(TrainingFile.content_deleted_at).is_(None),
                )
                .with_for_update()
            ).all()
        ) or [row]
    deleted_at = now_ts()
    for each in erased:
        each.status = "deleted"
        each.content_deleted_at = deleted_at
        each.content_deleted_by = actor
        each.erasure_request_id = erasure_request_id
        session.add(each)
    session.flush()
    if path is not None:
        _remove_content(path)
    return erased


# --- deleting --------------------------------------------------------------------------------

# The jobs' table, named here rather than imported: gateway.jobs imports this package, and
# a domain never imports one that imports it. A job in none of OpenAI's final statuses
# (queued, running, paused...) still reads its files. tests/gateway/files/test_delete.py
# checks these against gateway.jobs.models.
_JOBS = table(
    "fine_tuning_jobs",
    column("id", String),
    column("tenant", String),
    column("status", String),
    column("created_ns", BigInteger),
    column("training_file", String),
    column("validation_file", String),
)
JOB_FINAL_STATUSES: Final = ("succeeded", "failed", "cancelled")
MAX_JOBS_NAMED = 20


def _jobs_using(session: Session, row: TrainingFile) -> list[str]:
    jobs = _JOBS.c
    return list(
        session.scalars(
            select(jobs.id)
            .where(
                jobs.tenant == row.tenant,
                or_(jobs.training_file == row.id, jobs.validation_file == row.id),
                jobs.status.not_in(JOB_FINAL_STATUSES),
            )
            .order_by(jobs.created_ns, jobs.id)
            .limit(MAX_JOBS_NAMED)
        ).all()
    )


def _shared_content(session: Session, row: TrainingFile) -> bool:
    """Whether another live file of the same source holds the same stored bytes."""
    return (
        session.scalars(
            select(col(TrainingFile.id)).where(
                col(TrainingFile.tenant) == row.tenant,
                col(TrainingFile.data_source_id) == row.data_source_id,
                col(TrainingFile.content_sha256) == row.content_sha256,
                col(TrainingFile.content_deleted_at).is_(None),
                col(TrainingFile.id) != row.id,
            )
        ).first()
        is not None
    )


def _remove_if_unreferenced(state: Runtime, row_id: str, path: Path) -> None:
    """After the commit: the bytes go unless a file recorded since (the same upload again)
    holds them."""
    with Session(read_only(state.engine)) as fresh:
        row = fresh.get(TrainingFile, row_id)
        shared = row is not None and _shared_content(fresh, row)
    if not shared:
        _remove_content(path)
    log.info("file.content_removed" if not shared else "file.content_kept", file_id=row_id)


def delete(
    session: Session, *, state: Runtime, authorized: Authorized, file_id: str
) -> TrainingFile:
    """OpenAI's files.delete, with governance semantics: the content goes and the file can
    no longer be used; the row (hashes, datasheet, redaction lineage) stays, so models
    trained on it stay explainable. Refused while a job that has not finished uses it.
    Not erasure: the same bytes held by another file of the source stay, and nothing is
    searched for a data subject."""
    principal = authorized.principal
    row = get_in_tenant_file(session, tenant=principal.tenant, file_id=file_id, for_update=True)
    if row.deleted_at is not None:
        raise Gone("this file was deleted", code="file_deleted")
    jobs = _jobs_using(session, row)
    if jobs:
        raise Conflict(
            f"the file is used by a job that has not finished: {', '.join(jobs)}",
            code="file_in_use",
            details={"jobs": jobs},
        )
    path = stored_content(state.settings, row)
    shared = path is not None and _shared_content(session, row)
    had_content = row.content_deleted_at is None and row.content_sha256 is not None
    now = int(time.time())
    row.status = "deleted"
    row.deleted_at, row.deleted_by = now, principal.sub
    if row.content_deleted_at is None:
        row.content_deleted_at, row.content_deleted_by = now_ts(), principal.sub
    session.add(row)
    session.flush()
    record_allowed(
        session,
        authorized=authorized,
        action="file.deleted",
        details={
            "file_id": row.id,
            "data_source": row.data_source_id,
            "sha256": row.sha256,
            "bytes": row.bytes,
            "content_sha256": row.content_sha256 if had_content else None,
            "content_bytes": row.content_bytes if had_content else None,
            # identical bytes another file of the source holds are not removed with it
            "content_shared": shared,
        },
    )
    if path is not None and not shared:
        row_id = row.id
        after_commit(session, lambda: _remove_if_unreferenced(state, row_id, path))
    log.info("file.deleted", file_id=row.id, data_source=row.data_source_id, shared=shared)
    return row
