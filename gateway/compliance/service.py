"""Builds the regulators' documents from records (gateway.compliance.schemas says what
each holds). Only reads; each build is audited (the request scope commits it)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import structlog
from sqlmodel import Session, col, select

from audit.encoding import now_ts
from gateway.audit_api.service import record_allowed
from gateway.authz import Authorized
from gateway.base_models.models import RegisteredBaseModel
from gateway.compliance.schemas import (
    NOT_RECORDED,
    TO_COMPLETE,
    RecordModel,
    RecordOfProcessing,
    RecordsOfProcessing,
    RecordTransfer,
    SummaryBaseModel,
    SummaryGate,
    SummaryGeneral,
    SummaryPii,
    SummaryProcessing,
    SummarySize,
    SummarySource,
    SummarySourceKind,
    TrainingContentSummary,
)
from gateway.data_sources.models import DataSource
from gateway.data_sources.schemas import TRANSFER_BASIS_ARTICLE, TransferBasis
from gateway.files.models import TrainingFile
from gateway.providers import service as providers
from gateway.providers.models import Provider
from gateway.registry import service as registry
from gateway.registry.models import ModelVersion
from gateway.retention.service import DAY
from gateway.runtime import Runtime

log = structlog.get_logger()

# The template's section 2, in its order: data_origin -> (kind, title).
KINDS: tuple[tuple[str, str], ...] = (
    ("public", "Publicly available datasets"),
    ("licensed", "Private non-publicly available datasets obtained from third parties"),
    ("crawled", "Data crawled and scraped from online sources"),
    ("user", "User data"),
    ("synthetic", "Synthetic data"),
    ("other", "Other sources of data"),
)


def size_range(tokens: int | None) -> str:
    """The template's ranges for text."""
    if tokens is None:
        return TO_COMPLETE
    if tokens < 1_000_000_000:
        return "less than 1 billion tokens"
    if tokens <= 10_000_000_000_000:
        return "1 billion to 10 trillion tokens"
    return "more than 10 trillion tokens"


def _report(file: TrainingFile) -> dict[str, Any]:
    return file.report or {}


def _tokens(files: Iterable[TrainingFile]) -> int | None:
    counted = [(_report(f).get("tokens") or {}).get("total") for f in files]
    known = [value for value in counted if isinstance(value, int)]
    return sum(known) if known else None


def _dup_count(files: Iterable[TrainingFile], key: str) -> int:
    return sum(int((_report(f).get(key) or {}).get("count") or 0) for f in files)


def _pii_by_kind(files: Iterable[TrainingFile]) -> dict[str, int]:
    found: dict[str, int] = defaultdict(int)
    for file in files:
        for kind, value in ((_report(file).get("pii") or {}).get("by_type") or {}).items():
            found[kind] += int((value or {}).get("findings") or 0)
    return dict(sorted(found.items()))


def _model_files(session: Session, row: ModelVersion) -> list[TrainingFile]:
    found = (session.get(TrainingFile, entry.get("file_id", "")) for entry in row.data_files)
    return [file for file in found if file is not None and file.tenant == row.tenant]


# --- Art. 53(1)(d) ----------------------------------------------------------------------


def _base(session: Session, row: ModelVersion) -> SummaryBaseModel | None:
    base = session.get(RegisteredBaseModel, row.base_model)
    if base is None:
        return None
    return SummaryBaseModel(
        name=base.name,
        license=base.license,
        description=base.description or None,
        documentation=base.source,
        architecture=base.architecture,
        parameter_count=base.parameter_count,
        manifest_sha256=base.manifest_sha256,
    )


def _source(source: DataSource, files: list[TrainingFile]) -> SummarySource:
    tokens = _tokens(files)
    uploads = [file.created_at for file in files]
    return SummarySource(
        data_source=source.id,
        name=source.name,
        description=source.description,
        origin=source.data_origin or TO_COMPLETE,
        classification=source.classification,
        categories=source.data_categories or TO_COMPLETE,
        contains_personal_data=source.contains_personal_data,
        files=len(files),
        examples=sum(file.examples for file in files),
        tokens=tokens,
        volume_range=size_range(tokens),
        first_upload=min(uploads) if uploads else None,
        last_upload=max(uploads) if uploads else None,
    )


def _source_kinds(
    sources: list[DataSource], by_source: dict[str, list[TrainingFile]]
) -> list[SummarySourceKind]:
    kinds = []
    for kind, title in KINDS:
        members = [
            _source(source, by_source[source.id])
            for source in sources
            if (source.data_origin if source.data_origin in dict(KINDS) else "other") == kind
        ]
        kinds.append(SummarySourceKind(kind=kind, title=title, sources=members))
    return kinds


def _summary_to_complete(
    row: ModelVersion,
    sources: list[DataSource],
    *,
    tokens: int | None,
    erased: list[TrainingFile],
) -> list[str]:
    to_complete = ["general.provider_contact", "general.content_types"]
    for source in sources:
        if source.data_origin is None:
            to_complete.append(f"data_sources.{source.id}.origin")
        if not source.data_categories:
            to_complete.append(f"data_sources.{source.id}.categories")
    if tokens is None:
        to_complete.append("general.size.tokens")
    if row.promoted_at is None:
        to_complete.append("general.placed_on_market")
    if not erased:
        to_complete.append("processing.opt_outs")
    to_complete += ["processing.tdm_opt_outs", "processing.illegal_content_removal"]
    return to_complete


def _summary_general(
    session: Session, row: ModelVersion, files: list[TrainingFile], *, tokens: int | None
) -> SummaryGeneral:
    formats = {_report(file).get("format") for file in files} - {None}
    placed: str | int = row.promoted_at if row.promoted_at is not None else TO_COMPLETE
    uploads = [file.created_at for file in files]
    return SummaryGeneral(
        provider=row.tenant,
        provider_contact=TO_COMPLETE,
        model_id=row.id,
        version_created_at=row.created_at,
        placed_on_market=placed,
        base_model=_base(session, row),
        parent_model_id=row.parent_model_id,
        # the gateway trains text models on chat / prompt-completion files only
        modalities=["text"] if formats else [],
        size=[
            SummarySize(
                modality="text",
                examples=sum(file.examples for file in files),
                tokens=tokens,
                range=size_range(tokens),
            )
        ]
        if formats
        else [],
        content_types=TO_COMPLETE,
        latest_data_collection=max(uploads) if uploads else TO_COMPLETE,
    )


def _summary_processing(
    sources: list[DataSource],
    by_source: dict[str, list[TrainingFile]],
    files: list[TrainingFile],
    *,
    erased: list[TrainingFile],
) -> SummaryProcessing:
    opt_outs = (
        f"{len(erased)} file version(s) had content removed on a data subject's erasure "
        "request (GDPR Art. 17)"
        if erased
        else TO_COMPLETE
    )
    return SummaryProcessing(
        pii=[_pii(source, by_source[source.id]) for source in sources],
        exact_duplicates=_dup_count(files, "exact_duplicates"),
        near_duplicates=_dup_count(files, "near_duplicates"),
        quality_gates=[
            SummaryGate(
                data_source=source.id,
                min_examples=source.min_examples,
                max_conflict_rate=source.max_conflict_rate,
                overlap_threshold=source.overlap_threshold,
                max_overlapping_lines=source.max_overlapping_lines,
            )
            for source in sources
        ],
        opt_outs=opt_outs,
        tdm_opt_outs=TO_COMPLETE,
        illegal_content_removal=TO_COMPLETE,
    )


def training_content_summary(
    session: Session, *, state: Runtime, authorized: Authorized, model_id: str
) -> TrainingContentSummary:
    principal = authorized.principal
    row = registry.get_in_tenant(session, tenant=principal.tenant, model_id=model_id)
    files = _model_files(session, row)
    by_source: dict[str, list[TrainingFile]] = defaultdict(list)
    for file in files:
        by_source[file.data_source_id].append(file)
    sources = [
        source
        for source in (session.get(DataSource, sid) for sid in sorted(by_source))
        if source is not None and source.tenant == row.tenant
    ]
    kinds = _source_kinds(sources, by_source)
    tokens = _tokens(files)
    erased = [file for file in files if file.erasure_request_id is not None]
    to_complete = _summary_to_complete(row, sources, tokens=tokens, erased=erased)
    summary = TrainingContentSummary(
        generated_at=now_ts(),
        general=_summary_general(session, row, files, tokens=tokens),
        data_sources=kinds,
        processing=_summary_processing(sources, by_source, files, erased=erased),
        to_complete=to_complete,
    )
    record_allowed(
        session,
        authorized=authorized,
        action="model.training_content_summary_exported",
        details={"model_id": row.id, "data_sources": [source.id for source in sources]},
    )
    log.info("model.training_content_summary_exported", model_id=row.id)
    return summary


def _pii(source: DataSource, files: list[TrainingFile]) -> SummaryPii:
    sets = {(_report(f).get("pii") or {}).get("recogniser_set") for f in files} - {None}
    return SummaryPii(
        data_source=source.id,
        action=source.pii_action,
        recogniser_sets=sorted(str(s) for s in sets),
        findings=sum(int((_report(f).get("pii") or {}).get("findings") or 0) for f in files),
        redacted_lines=sum(int((f.redaction or {}).get("redacted_lines") or 0) for f in files),
    )


# --- GDPR Art. 30(1) --------------------------------------------------------------------


def _callers(state: Runtime, *, tenant: str, model_id: str) -> tuple[list[str], list[str]]:
    """Subjects whose p rules grant (or deny) `infer` on the model, in this tenant or all.
    Roles come from tokens as well as g rules: a role listed here is held by whoever the
    identity provider gives it to."""
    allowed: set[str] = set()
    denied: set[str] = set()
    objects = {registry.policy_object(model_id), "model:*"}
    for rule in state.policy.rules():
        if rule.ptype != "p":
            continue
        sub, rule_tenant, obj, act, eft = rule.values
        if act == "infer" and obj in objects and rule_tenant in (tenant, "*"):
            (allowed if eft == "allow" else denied).add(sub)
    return sorted(allowed), sorted(denied)


def _access(state: Runtime, *, tenant: str, source: DataSource) -> str:
    objects = {f"ds:{source.id}", "ds:*", f"class:{source.classification}", "class:*"}
    granted = sorted(
        {
            f"{rule.values[0]} {rule.values[3]}"
            for rule in state.policy.rules()
            if rule.ptype == "p"
            and rule.values[2] in objects
            and rule.values[1] in (tenant, "*")
            and rule.values[3] in ("read", "upload", "train")
            and rule.values[4] == "allow"
        }
    )
    return (
        "access control: every read, upload and training decided by policy ("
        + (", ".join(granted) or "no grants")
        + ")"
    )


def _recipients(
    state: Runtime, *, tenant: str, source: DataSource, models: Iterable[ModelVersion]
) -> list[RecordModel]:
    recipients = []
    for model in models:
        if any(entry.get("data_source") == source.id for entry in model.data_files):
            callers, denied = _callers(state, tenant=tenant, model_id=model.id)
            recipients.append(
                RecordModel(model_id=model.id, status=model.status, callers=callers, denied=denied)
            )
    return recipients


def _measures(state: Runtime, *, tenant: str, source: DataSource) -> list[str]:
    return [
        f"PII scan at upload; action {source.pii_action}"
        + (
            " (personal data replaced by placeholders before training)"
            if source.pii_action == "redact"
            else ""
        ),
        _access(state, tenant=tenant, source=source),
        "audit: every change and decision in a hash-chained, append-only log with signed "
        f"checkpoints, kept {state.settings.audit_retention_days} days",
        "content-addressed storage (SHA-256); erasure and retention delete content, keep hashes",
    ]


def _transfers(source: DataSource, active: list[Provider]) -> list[RecordTransfer] | str:
    """The transfers to registered providers that the source's record allows, or "none
    recorded" (a classification that forbids every export allows none)."""
    if providers.export_forbidden(source):
        return "none recorded"
    allowed = [
        RecordTransfer(
            provider=provider.name,
            base_url=provider.base_url,
            region=transfer["region"],
            legal_basis=transfer["legal_basis"],
            legal_reference=TRANSFER_BASIS_ARTICLE[TransferBasis(transfer["legal_basis"])],
        )
        for provider in active
        for transfer in providers.allowed_transfers(source, provider)
    ]
    return allowed or "none recorded"


def records_of_processing(
    session: Session, *, state: Runtime, authorized: Authorized
) -> RecordsOfProcessing:
    tenant = authorized.principal.tenant
    sources = session.exec(
        select(DataSource).where(col(DataSource.tenant) == tenant).order_by(col(DataSource.id))
    ).all()
    files_of: dict[str, list[TrainingFile]] = defaultdict(list)
    for file in session.exec(select(TrainingFile).where(col(TrainingFile.tenant) == tenant)).all():
        files_of[file.data_source_id].append(file)
    models = session.exec(
        select(ModelVersion)
        .where(col(ModelVersion.tenant) == tenant)
        .order_by(col(ModelVersion.id))
    ).all()
    active = providers.active_providers(session)
    records = []
    for source in sources:
        files = files_of[source.id]
        pii = _pii_by_kind(files)
        found = any(pii.values())
        if not (source.contains_personal_data or found):
            continue
        personal = " and ".join(
            part
            for part, yes in (("declared", source.contains_personal_data), ("found", found))
            if yes
        )
        live = [f for f in files if f.content_deleted_at is None and f.content_sha256]
        recipients = _recipients(state, tenant=tenant, source=source, models=models)
        measures = _measures(state, tenant=tenant, source=source)
        records.append(
            RecordOfProcessing(
                data_source=source.id,
                name=source.name,
                personal_data=personal,
                purposes=source.allowed_purposes,
                data_subject_categories=source.data_subject_categories or NOT_RECORDED,
                data_categories=source.data_categories or (sorted(pii) if pii else NOT_RECORDED),
                pii_found=pii,
                legal_basis=source.legal_basis or NOT_RECORDED,
                recipients=recipients,
                transfers=_transfers(source, active),
                retention_days=source.retention_days,
                legal_hold=source.legal_hold,
                next_deletion_due=min(f.created_at for f in live) + source.retention_days * DAY
                if live
                else None,
                erasure="on a data subject's request (POST /v1/erasure_requests): content of "
                "every file version that mentions them is deleted on the decision",
                erased_files=sum(1 for f in files if f.erasure_request_id is not None),
                technical_measures=measures,
            )
        )
    record_allowed(
        session,
        authorized=authorized,
        action="compliance.records_of_processing_exported",
        details={"records": len(records)},
    )
    return RecordsOfProcessing(
        generated_at=now_ts(),
        controller=tenant,
        controller_contact=NOT_RECORDED,
        records=records,
        notes=[
            "recipients: the models trained on the source and the subjects granted `infer` on "
            "them by policy rules; roles are also given by the identity provider's tokens",
            "transfers: to the registered providers that the data source's transfer records "
            "allow (a region the provider processes data in, a legal basis); each export also "
            "needs the policy's `export` on the source and on the provider, and is audited",
            "data subject categories and data categories: as declared on the data source "
            "(data categories fall back to the PII kinds found)",
        ],
    )
