"""Erasure requests (GDPR Art. 17): find the file versions that mention a data subject,
record the request, and carry out the decision. Never commits.

The search (gateway.erasure.search) runs inside the filing request while the tenant's
stored content is at most ``erasure_inline_search_bytes``; above that the request is filed
as ``searching`` and a background searcher reads the files, with progress, resumably.

The identifier itself is never stored or logged. What is kept, on the request and in the
audit trail, is HMAC-SHA256(salt, identifier); the salt is a row of its own outside the
chain, and destroying it (``destroy_salt`` on the decision) leaves nothing that links the
request back to the person.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from typing import Any

import structlog
from sqlmodel import Session, col, select

from audit.encoding import now_ts
from gateway.audit_api.service import record_allowed
from gateway.authz import Authorized
from gateway.erasure import search
from gateway.erasure.models import ErasureRequest, ErasureSalt
from gateway.erasure.schemas import (
    ERASURE_ID,
    ErasureDecide,
    ErasureDecision,
    ErasureRequestCreate,
)
from gateway.errors import Conflict, NotFound
from gateway.files.models import TrainingFile
from gateway.files.service import erase_content
from gateway.inference import transcripts as inference_transcripts
from gateway.jobs.events import add_event
from gateway.jobs.models import ACTIVE_STATUSES, FineTuningJob
from gateway.registry.service import flag_models
from gateway.runtime import Runtime

log = structlog.get_logger()


def new_request_id() -> str:
    return f"er-{secrets.token_hex(8)}"


def subject_digest(salt: str, subject: str) -> str:
    """Case and surrounding space do not make a different person: john@X.com is
    john@x.com."""
    canonical = subject.strip().casefold().encode()
    return hmac.new(bytes.fromhex(salt), canonical, hashlib.sha256).hexdigest()


def create(
    session: Session, *, state: Runtime, authorized: Authorized, body: ErasureRequestCreate
) -> ErasureRequest:
    principal = authorized.principal
    contents = search.plan(state, tenant=principal.tenant)
    background = sum(c.bytes for c in contents) > state.settings.erasure_inline_search_bytes
    findings: dict[str, Any] = (
        {"files": [], "scanned_files": 0}
        if background
        else search.find_files(state, tenant=principal.tenant, subject=body.subject)
    )
    salt = secrets.token_hex(32)
    request = ErasureRequest(
        id=new_request_id(),
        tenant=principal.tenant,
        subject_sha256=subject_digest(salt, body.subject),
        reference=body.reference,
        status="searching" if background else "open",
        findings=findings,
        requested_by=principal.sub,
        requested_at=now_ts(),
        search=search.new_search(contents) if background else None,
    )
    session.add(request)
    session.flush()
    request.findings = {
        **findings,
        "models": flag_models(
            session,
            tenant=principal.tenant,
            file_ids=[m["file_id"] for m in findings["files"]],
            reason="erasure_requested",
            ref=request.id,
            authorized=authorized,
        ),
        # kept chat transcripts (issue 15) that mention the subject or that they made
        "transcripts": inference_transcripts.find(
            session, tenant=principal.tenant, subject=body.subject
        ),
    }
    # A background search needs the identifier until it ends (gateway.erasure.search).
    pending = body.subject if background else None
    session.add(ErasureSalt(request_id=request.id, salt=salt, pending_subject=pending))
    session.flush()
    record_allowed(
        session,
        authorized=authorized,
        action="erasure.requested",
        resource=f"erasure:{request.id}",
        details={
            "subject_hmac_sha256": request.subject_sha256,
            "reference": request.reference,
            "scanned_files": findings["scanned_files"],
            "files": [
                {key: match[key] for key in ("file_id", "content_sha256", "matching_lines")}
                for match in findings["files"]
            ],
            "transcripts": len(request.findings["transcripts"]),
            "search": "background" if background else "inline",
        },
    )
    log.info(
        "erasure.requested",
        request_id=request.id,
        files=len(findings["files"]),
        scanned_files=findings["scanned_files"],
        background=background,
    )
    return request


def get_in_tenant(
    session: Session, *, tenant: str, request_id: str, for_update: bool = False
) -> ErasureRequest:
    request = None
    if ERASURE_ID.match(request_id):
        request = session.get(ErasureRequest, request_id, with_for_update=for_update)
    if request is None or request.tenant != tenant:
        raise NotFound(
            f"erasure request {request_id!r} not found", code="erasure_request_not_found"
        )
    return request


def decide(
    session: Session,
    *,
    state: Runtime,
    authorized: Authorized,
    request_id: str,
    body: ErasureDecide,
) -> ErasureRequest:
    principal = authorized.principal
    request = get_in_tenant(
        session, tenant=principal.tenant, request_id=request_id, for_update=True
    )
    if request.status == "searching":
        raise Conflict(
            "the search for this request is still running: decide once it has ended",
            code="erasure_search_running",
        )
    if request.status != "open":
        raise Conflict("this erasure request is already decided", code="already_decided")
    erased = (
        _erase_found_files(session, state=state, request=request, actor=principal.sub)
        if body.decision is ErasureDecision.delete_data
        else []
    )
    erased_transcripts = _erase_transcripts(session, request=request, decision=body.decision)
    stopped_jobs: list[str] = []
    if erased:
        erased_ids = [item["file_id"] for item in erased]
        stopped_jobs = _stop_jobs_on(
            session, authorized=authorized, request_id=request.id, file_ids=erased_ids
        )
        # Versions registered since the request was made are flagged too.
        flag_models(
            session,
            tenant=principal.tenant,
            file_ids=erased_ids,
            reason="erasure_requested",
            ref=request.id,
            authorized=authorized,
        )
    if body.destroy_salt:
        salt = session.get(ErasureSalt, request.id)
        if salt is not None:
            session.delete(salt)
        request.salt_destroyed = True
        # The reason is free text and may name the person; the trail keeps its hash.
        body_reason = None
    else:
        body_reason = body.reason
    request.status = "decided"
    request.decision = body.decision.value
    request.decision_reason = body_reason
    request.decided_by = principal.sub
    request.decided_at = now_ts()
    session.add(request)
    session.flush()
    record_allowed(
        session,
        authorized=authorized,
        action="erasure.decided",
        resource=f"erasure:{request.id}",
        details={
            "decision": request.decision,
            # Free text may name the person: the trail keeps its hash only.
            "reason_sha256": (
                hashlib.sha256(body.reason.encode()).hexdigest() if body.reason else None
            ),
            "erased_files": erased,
            "erased_transcripts": erased_transcripts,
            "stopped_jobs": stopped_jobs,
            "salt_destroyed": request.salt_destroyed,
        },
    )
    log.info(
        "erasure.decided",
        request_id=request.id,
        decision=request.decision,
        erased_files=len(erased),
    )
    return request


def _erase_transcripts(
    session: Session, *, request: ErasureRequest, decision: ErasureDecision
) -> int:
    """delete_data: the kept chat transcripts the request found (gateway.inference) go."""
    if decision is not ErasureDecision.delete_data:
        return 0
    found = list(request.findings.get("transcripts", []))
    return inference_transcripts.delete(session, tenant=request.tenant, call_ids=found)


def _erase_found_files(
    session: Session, *, state: Runtime, request: ErasureRequest, actor: str
) -> list[dict[str, Any]]:
    """delete_data: the content of every file version the search found, and of every live
    copy of the same bytes in its source, goes; their hashes stay."""
    erased: list[dict[str, Any]] = []
    for match in request.findings.get("files", []):
        row = session.get(TrainingFile, match["file_id"], with_for_update=True)
        if row is None or row.content_deleted_at is not None:
            continue
        erased.extend(
            {"file_id": each.id, "content_sha256": each.content_sha256}
            for each in erase_content(
                session,
                settings=state.settings,
                row=row,
                actor=actor,
                erasure_request_id=request.id,
            )
        )
    return erased


def _stop_jobs_on(
    session: Session, *, authorized: Authorized, request_id: str, file_ids: list[str]
) -> list[str]:
    """Jobs not yet finished that read an erased file are stopped: a queued one at once,
    a running one asked to stop (and its worker refuses to register the result)."""
    jobs = session.scalars(
        select(FineTuningJob)
        .where(
            col(FineTuningJob.tenant) == authorized.principal.tenant,
            col(FineTuningJob.status).in_(ACTIVE_STATUSES),
            (col(FineTuningJob.training_file).in_(file_ids))
            | (col(FineTuningJob.validation_file).in_(file_ids)),
        )
        .with_for_update()
    ).all()
    for job in jobs:
        if job.status != "running" and job.lease_owner is None:
            job.status = "cancelled"
            job.finished_at = int(time.time())
        else:
            job.cancel_requested = True
        add_event(
            session,
            job_id=job.id,
            level="warn",
            message=f"Stopped: its data was erased (erasure request {request_id})",
        )
        session.add(job)
    return [job.id for job in jobs]


def list_in_tenant(
    session: Session,
    *,
    authorized: Authorized,
    status: str | None,
    after: str | None,
    limit: int,
) -> tuple[list[ErasureRequest], str | None]:
    query = select(ErasureRequest).where(col(ErasureRequest.tenant) == authorized.principal.tenant)
    if status is not None:
        query = query.where(col(ErasureRequest.status) == status)
    if after is not None:
        query = query.where(col(ErasureRequest.id) > after)
    rows = list(session.scalars(query.order_by(col(ErasureRequest.id)).limit(limit + 1)).all())
    more = len(rows) > limit
    page = rows[:limit]
    return page, (page[-1].id if more else None)
