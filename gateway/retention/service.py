"""Retention, enforced (issue 16 §3): each data source's ``retention_days`` counts from a
file version's upload; past it, the sweep deletes the content the way erasure does
(gateway.files.service.erase_content: the row, its hashes and its lineage stay) and audits
each deletion. ``retention_warn_days`` before, the source's owner is warned once per file
(an audit event, and an item in "waiting for me"). A legal hold on the source suspends both;
a file that a job not yet finished reads waits for the job to end. Never commits.

Identical bytes uploaded again to the same source are one stored content: it is due when
its newest upload is, so a re-upload restarts the clock for that content.
"""

from __future__ import annotations

import hashlib
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import structlog
from sqlmodel import Session, col, select

from audit.encoding import now_ts
from gateway.audit_api.service import record, record_allowed
from gateway.authz import Authorized
from gateway.config import Settings
from gateway.data_sources.models import DataSource
from gateway.data_sources.service import get_in_tenant
from gateway.errors import Conflict
from gateway.files.models import TrainingFile
from gateway.files.service import erase_content
from gateway.jobs.models import FINAL_STATUSES, FineTuningJob
from gateway.retention.models import RetentionWarning

log = structlog.get_logger()

SYSTEM_ACTOR = "system:retention"
DAY = 86_400


@dataclass
class SweepResult:
    """What one sweep did: file ids deleted and warned, the ids waiting for a job, the
    sources skipped for a legal hold."""

    deleted: list[str] = field(default_factory=list)
    warned: list[str] = field(default_factory=list)
    waiting_for_jobs: list[str] = field(default_factory=list)
    held: list[str] = field(default_factory=list)


def _policy_object(data_source_id: str) -> str:
    return f"ds:{data_source_id}"


def _live_files(session: Session) -> list[tuple[TrainingFile, DataSource]]:
    rows = session.exec(
        select(TrainingFile, DataSource)
        .join(DataSource, col(DataSource.id) == col(TrainingFile.data_source_id))
        .where(
            col(TrainingFile.content_deleted_at).is_(None),
            col(TrainingFile.content_sha256).is_not(None),
        )
        .order_by(col(TrainingFile.created_at), col(TrainingFile.id))
    ).all()
    return [(file, source) for file, source in rows]


def _in_use(session: Session, files: list[TrainingFile]) -> list[str]:
    """Jobs not yet finished (queued, running, paused...) that read any of the files."""
    ids = [file.id for file in files]
    return list(
        session.scalars(
            select(col(FineTuningJob.id)).where(
                col(FineTuningJob.tenant) == files[0].tenant,
                col(FineTuningJob.status).not_in(FINAL_STATUSES),
                col(FineTuningJob.training_file).in_(ids)
                | col(FineTuningJob.validation_file).in_(ids),
            )
        ).all()
    )


def _file_details(file: TrainingFile, source: DataSource, due_at: int) -> dict[str, Any]:
    return {
        "file_id": file.id,
        "data_source": source.id,
        "sha256": file.sha256,
        "content_sha256": file.content_sha256,
        "uploaded_at": file.created_at,
        "retention_days": source.retention_days,
        "delete_after": due_at,
    }


def sweep(session: Session, *, settings: Settings, now: int | None = None) -> SweepResult:
    """One pass over every tenant's live file contents (``now``: epoch seconds, for
    tests). Deletes what is due, warns what will be within ``retention_warn_days``."""
    now = int(time.time()) if now is None else now
    result = SweepResult()
    groups: dict[tuple[str, str], list[tuple[TrainingFile, DataSource]]] = defaultdict(list)
    for file, source in _live_files(session):
        groups[(source.id, file.content_sha256 or "")].append((file, source))
    warned = {warning.file_id: warning for warning in session.exec(select(RetentionWarning)).all()}
    for (source_id, _content), members in groups.items():
        source = members[0][1]
        files = [file for file, _ in members]
        if source.legal_hold:
            if source_id not in result.held:
                result.held.append(source_id)
            continue
        due_at = max(file.created_at for file in files) + source.retention_days * DAY
        if now >= due_at:
            jobs = _in_use(session, files)
            if jobs:
                result.waiting_for_jobs.extend(file.id for file in files)
                log.info("retention.waiting_for_jobs", data_source=source_id, jobs=len(jobs))
                continue
            _delete(session, settings=settings, source=source, files=files, due_at=due_at)
            result.deleted.extend(file.id for file in files)
        elif now >= due_at - settings.retention_warn_days * DAY:
            for file in files:
                if file.id in warned:
                    warned[file.id].delete_after = due_at
                    session.add(warned[file.id])
                    continue
                _warn(session, source=source, file=file, due_at=due_at)
                result.warned.append(file.id)
    session.flush()
    return result


def _delete(
    session: Session,
    *,
    settings: Settings,
    source: DataSource,
    files: list[TrainingFile],
    due_at: int,
) -> None:
    erased = erase_content(
        session, settings=settings, row=files[0], actor=SYSTEM_ACTOR, erasure_request_id=None
    )
    for file in erased:
        record(
            session,
            actor=SYSTEM_ACTOR,
            tenant=file.tenant,
            action="retention.content_deleted",
            resource=_policy_object(source.id),
            decision="allow",
            details=_file_details(file, source, due_at),
        )
        log.info("retention.content_deleted", file_id=file.id, data_source=source.id)


def _warn(session: Session, *, source: DataSource, file: TrainingFile, due_at: int) -> None:
    session.add(
        RetentionWarning(
            file_id=file.id,
            tenant=file.tenant,
            data_source_id=source.id,
            owner=source.owner,
            delete_after=due_at,
            warned_at=now_ts(),
        )
    )
    record(
        session,
        actor=SYSTEM_ACTOR,
        tenant=file.tenant,
        action="retention.warning",
        resource=_policy_object(source.id),
        decision="allow",
        details={**_file_details(file, source, due_at), "owner": source.owner},
    )
    log.info("retention.warning", file_id=file.id, data_source=source.id)


# --- "waiting for me" ----------------------------------------------------------------------


@dataclass(frozen=True)
class DueFile:
    file_id: str
    filename: str
    data_source_id: str
    data_source_name: str
    delete_after: int
    warned_at: str


def warnings_for(
    session: Session, *, tenant: str, owner: str, limit: int
) -> tuple[list[DueFile], bool]:
    """The files of the sources ``owner`` owns whose content is due for deletion soon
    (warned, not yet deleted, not held), soonest first; and whether there are more."""
    rows = session.exec(
        select(RetentionWarning, TrainingFile, DataSource)
        .join(TrainingFile, col(TrainingFile.id) == col(RetentionWarning.file_id))
        .join(DataSource, col(DataSource.id) == col(RetentionWarning.data_source_id))
        .where(
            col(RetentionWarning.tenant) == tenant,
            col(DataSource.owner) == owner,
            col(DataSource.legal_hold).is_(False),
            col(TrainingFile.content_deleted_at).is_(None),
        )
        .order_by(col(RetentionWarning.delete_after), col(RetentionWarning.file_id))
        .limit(limit + 1)
    ).all()
    due = [
        DueFile(
            file_id=file.id,
            filename=file.filename,
            data_source_id=source.id,
            data_source_name=source.name,
            delete_after=warning.delete_after,
            warned_at=warning.warned_at,
        )
        for warning, file, source in rows[:limit]
    ]
    return due, len(rows) > limit


# --- legal holds ---------------------------------------------------------------------------


def set_legal_hold(
    session: Session, *, authorized: Authorized, data_source_id: str, reason: str
) -> DataSource:
    principal = authorized.principal
    source = get_in_tenant(
        session, tenant=principal.tenant, data_source_id=data_source_id, for_update=True
    )
    if source.legal_hold:
        raise Conflict("the data source is already under a legal hold", code="legal_hold_set")
    source.legal_hold = True
    source.legal_hold_reason = reason
    source.legal_hold_by = principal.sub
    source.legal_hold_at = now_ts()
    session.add(source)
    session.flush()
    _record_hold(session, authorized=authorized, action="data_source.legal_hold_set", reason=reason)
    return source


def release_legal_hold(
    session: Session, *, authorized: Authorized, data_source_id: str, reason: str
) -> DataSource:
    principal = authorized.principal
    source = get_in_tenant(
        session, tenant=principal.tenant, data_source_id=data_source_id, for_update=True
    )
    if not source.legal_hold:
        raise Conflict("the data source is under no legal hold", code="legal_hold_not_set")
    held_since = source.legal_hold_at
    source.legal_hold = False
    source.legal_hold_reason = source.legal_hold_by = source.legal_hold_at = None
    session.add(source)
    session.flush()
    _record_hold(
        session,
        authorized=authorized,
        action="data_source.legal_hold_released",
        reason=reason,
        extra={"held_since": held_since},
    )
    return source


def _record_hold(
    session: Session,
    *,
    authorized: Authorized,
    action: str,
    reason: str,
    extra: dict[str, Any] | None = None,
) -> None:
    # Free text may name people: the trail keeps its hash, the row the text.
    record_allowed(
        session,
        authorized=authorized,
        action=action,
        details={"reason_sha256": hashlib.sha256(reason.encode()).hexdigest(), **(extra or {})},
    )
    log.info(action, resource=authorized.obj)
