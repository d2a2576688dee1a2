"""The technical dossier of a fine-tuned model version, in the spirit of EU AI Act Annex IV:
what it is for, what data made it and how that data was prepared, how it was trained and
evaluated, who approved what, and the audit events behind each of those statements, each
with a Merkle inclusion proof against a signed checkpoint.

This gathers the rows once and hands them to one builder per section
(gateway.dossier.sections; the audit section is gateway.dossier.trail's); the sections'
schemas (gateway.dossier.schemas) say what each holds, and gateway.dossier.markdown tells
the same for people. Never commits.
"""

from __future__ import annotations

import structlog
from sqlmodel import Session, col, select

from audit.encoding import now_ts
from gateway.audit_api.service import flush_queue, record_allowed
from gateway.authz import Authorized
from gateway.data_sources.models import DataSource
from gateway.dossier import annex_iv, mislabels, production, sections, trail
from gateway.dossier.lineage import build_lineage
from gateway.dossier.schemas import DOSSIER_FORMAT, DossierPublic
from gateway.files.models import TrainingFile
from gateway.jobs.models import FineTuningJob
from gateway.registry import service as registry
from gateway.registry.models import ModelVersion, PromotionRequest
from gateway.runtime import Runtime

log = structlog.get_logger()


def _files(session: Session, row: ModelVersion) -> dict[str, TrainingFile]:
    """The rows of the files the version names, where this tenant holds them."""
    found = (session.get(TrainingFile, entry.get("file_id", "")) for entry in row.data_files)
    return {file.id: file for file in found if file is not None and file.tenant == row.tenant}


def _sources(
    session: Session, row: ModelVersion, files: dict[str, TrainingFile]
) -> list[DataSource]:
    """The data sources of those files (as the version recorded them, else as the file's
    row says), sorted by id, where this tenant holds them."""
    named = (
        entry.get("data_source")
        or getattr(files.get(entry.get("file_id", "")), "data_source_id", None)
        for entry in row.data_files
    )
    ids = {source_id for source_id in named if source_id is not None}
    found = (session.get(DataSource, source_id) for source_id in sorted(ids))
    return [source for source in found if source is not None and source.tenant == row.tenant]


def _promotion_requests(session: Session, row: ModelVersion) -> list[PromotionRequest]:
    """Every request to promote the version, oldest first."""
    return list(
        session.scalars(
            select(PromotionRequest)
            .where(col(PromotionRequest.model_id) == row.id)
            .order_by(col(PromotionRequest.created_ns), col(PromotionRequest.id))
        ).all()
    )


def _record_export(session: Session, *, authorized: Authorized, dossier: DossierPublic) -> None:
    audit = dossier.audit
    record_allowed(
        session,
        authorized=authorized,
        action="model.dossier_exported",
        details={
            "model_id": dossier.model_id,
            "format": DOSSIER_FORMAT,
            "events": len(audit.events),
            "tree_size": audit.checkpoint.tree_size if audit.checkpoint is not None else None,
            "truncated": audit.truncated,
        },
    )
    log.info("model.dossier_exported", model_id=dossier.model_id, events=len(audit.events))


def build(
    session: Session, *, state: Runtime, authorized: Authorized, model_id: str
) -> DossierPublic:
    """Builds the dossier and records its export. The audit queue is flushed first (before
    this session touches the database) so the trail covers everything committed so far."""
    flush_queue(state)
    principal = authorized.principal
    row = registry.get_in_tenant(session, tenant=principal.tenant, model_id=model_id)
    job = session.get(FineTuningJob, row.job_id)
    lineage = build_lineage(session, row=row)
    files = _files(session, row)
    sources = _sources(session, row, files)
    dossier = DossierPublic(
        format=DOSSIER_FORMAT,
        model_id=row.id,
        generated_at=now_ts(),
        generated_by=principal.sub,
        general=sections.general(row),
        intended_purpose=sections.intended_purpose(row, job=job, sources=sources),
        data=sections.data(row, files=files, sources=sources),
        preparation=sections.preparation(row, files=files),
        training=sections.training(row, job=job),
        evaluation=sections.evaluation(row, job=job),
        approvals=sections.approvals(
            row, sources=sources, promotion_requests=_promotion_requests(session, row)
        ),
        lineage=lineage,
        flags=row.flags,
        cleared_flags=row.cleared_flags,
        audit=trail.audit_section(
            session, state=state, row=row, data_sources=[source.id for source in sources]
        ),
        production=production.production(session, row, job=job, settings=state.settings),
    )
    dossier.suspected_mislabels = mislabels.section(session, job=job, evaluation=row.evaluation)
    dossier.annex_iv = annex_iv.check(dossier)
    _record_export(session, authorized=authorized, dossier=dossier)
    return dossier
