"""Per-model text retention: a compliance officer turns it on (audited) and the model's
calls then keep their full prompt and completion in ``inference_transcripts`` for the
retention period. Erasure requests reach that table: ``find`` at the request,
``delete`` at a delete_data decision. Never commits."""

from __future__ import annotations

import hashlib
import time

import structlog
from sqlalchemy import delete as sql_delete
from sqlalchemy import func, or_
from sqlmodel import Session, col, select

from gateway.audit_api.service import record_allowed
from gateway.authz import Authorized
from gateway.errors import InvalidRequest
from gateway.inference.models import InferenceModelSettings, InferenceTranscript
from gateway.inference.schemas import TextRetentionSet
from gateway.registry.service import get_in_tenant, is_fine_tuned
from gateway.runtime import Runtime

log = structlog.get_logger()

SHOWN = 1000


def set_text_retention(
    session: Session,
    *,
    state: Runtime,
    authorized: Authorized,
    model_id: str,
    body: TextRetentionSet,
) -> InferenceModelSettings:
    tenant = authorized.principal.tenant
    if is_fine_tuned(model_id):
        get_in_tenant(session, tenant=tenant, model_id=model_id)  # 404 in another tenant
    else:
        raise InvalidRequest(
            "text retention is set on a fine-tuned model", code="invalid_request", param="model_id"
        )
    longest = state.settings.inference_transcript_max_retention_days
    if body.keep_text and not 1 <= body.retention_days <= longest:
        raise InvalidRequest(
            f"retention_days must be 1..{longest} when keep_text is on",
            code="invalid_request",
            param="retention_days",
            details={"max_retention_days": longest},
        )
    row = session.get(InferenceModelSettings, model_id, with_for_update=True)
    previous = None if row is None else {"keep_text": row.keep_text, "days": row.retention_days}
    if row is None:
        row = InferenceModelSettings(
            model_id=model_id,
            tenant=tenant,
            set_by=authorized.principal.sub,
            set_at=int(time.time()),
            policy_version=authorized.policy_version,
        )
    row.keep_text = body.keep_text
    row.retention_days = body.retention_days if body.keep_text else 0
    row.set_by = authorized.principal.sub
    row.set_at = int(time.time())
    row.policy_version = authorized.policy_version
    session.add(row)
    session.flush()
    record_allowed(
        session,
        authorized=authorized,
        action="model.text_retention_set",
        details={
            "model_id": model_id,
            "keep_text": row.keep_text,
            "retention_days": row.retention_days,
            "previous": previous,
            "reason_sha256": hashlib.sha256(body.reason.encode()).hexdigest(),
        },
    )
    log.info("model.text_retention_set", model_id=model_id, keep_text=row.keep_text)
    return row


def get_settings(session: Session, *, tenant: str, model_id: str) -> InferenceModelSettings | None:
    row = session.get(InferenceModelSettings, model_id)
    return row if row is not None and row.tenant == tenant else None


def find(session: Session, *, tenant: str, subject: str) -> list[str]:
    """The kept transcripts of the tenant that mention ``subject`` (case-insensitively) or
    that ``subject`` made: their call ids."""
    needle = subject.strip().casefold()
    if not needle:
        return []
    escaped = needle.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    pattern = f"%{escaped}%"
    rows = session.scalars(
        select(col(InferenceTranscript.call_id))
        .where(
            col(InferenceTranscript.tenant) == tenant,
            or_(
                func.lower(col(InferenceTranscript.prompt)).like(pattern, escape="\\"),
                func.lower(col(InferenceTranscript.completion)).like(pattern, escape="\\"),
                func.lower(col(InferenceTranscript.principal)) == needle,
            ),
        )
        .order_by(col(InferenceTranscript.call_id))
    ).all()
    return list(rows)


def delete(session: Session, *, tenant: str, call_ids: list[str]) -> int:
    """Deletes the tenant's transcripts of ``call_ids``; how many there were."""
    if not call_ids:
        return 0
    result = session.execute(
        sql_delete(InferenceTranscript).where(
            col(InferenceTranscript.tenant) == tenant,
            col(InferenceTranscript.call_id).in_(call_ids),
        )
    )
    return int(getattr(result, "rowcount", 0) or 0)
