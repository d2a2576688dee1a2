"""One builder per section of the dossier, each from the rows the service gathered (the
model version, its job, its files and their data sources). They only read: the audit
section, which may sign a checkpoint, is gateway.dossier.trail's."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import Any

from gateway.data_sources.models import DataSource
from gateway.dossier.lineage import lineage_file
from gateway.dossier.records import DossierRedaction
from gateway.dossier.schemas import (
    DossierApprovals,
    DossierData,
    DossierDataSource,
    DossierDeletion,
    DossierDeletionStep,
    DossierErasureStep,
    DossierEvaluation,
    DossierFile,
    DossierGeneral,
    DossierIntendedPurpose,
    DossierJob,
    DossierPiiCount,
    DossierPiiStep,
    DossierPreparedFile,
    DossierPromotion,
    DossierPromotionRequest,
    DossierPurposeSource,
    DossierRedactionStep,
    DossierRetirement,
    DossierSourceApproval,
    DossierStep,
    DossierTraining,
    DossierTrainingRequest,
    DossierUnheldFile,
    DossierValidationStep,
)
from gateway.files.models import TrainingFile
from gateway.jobs.models import FineTuningJob
from gateway.registry.models import ModelVersion, PromotionRequest

UNHELD_NOTE = "the file's record is not held here"


def _file_of(entry: dict[str, Any], files: dict[str, TrainingFile]) -> TrainingFile | None:
    return files.get(entry.get("file_id", ""))


# --- 1. general, 2. intended purpose -----------------------------------------------------


def general(row: ModelVersion) -> DossierGeneral:
    return DossierGeneral(
        model_id=row.id,
        provider=row.tenant,
        status=row.status,
        created_at=row.created_at,
        base_model=row.base_model,
        base_manifest_sha256=row.base_manifest_sha256,
        parent_model_id=row.parent_model_id,
        adapter_sha256=row.adapter_sha256,
        adapter_files=row.adapter_files,
        job_id=row.job_id,
        requested_by=row.requested_by,
        deleted_at=row.deleted_at,
    )


def intended_purpose(
    row: ModelVersion, *, job: FineTuningJob | None, sources: Iterable[DataSource]
) -> DossierIntendedPurpose:
    job_purpose = job.purpose if job is not None else row.purpose
    return DossierIntendedPurpose(
        purpose=row.purpose,
        job_purpose=job_purpose,
        data_sources=[
            DossierPurposeSource(
                data_source=source.id,
                name=source.name,
                allowed_purposes=source.allowed_purposes,
                purpose_allowed=job_purpose in source.allowed_purposes,
            )
            for source in sources
        ],
    )


# --- 3. data, 4. preparation ------------------------------------------------------------


def data(
    row: ModelVersion, *, files: dict[str, TrainingFile], sources: Iterable[DataSource]
) -> DossierData:
    described = []
    for entry in row.data_files:
        file = _file_of(entry, files)
        described.append(
            DossierFile(
                **dict(lineage_file(entry, file)),
                bytes=file.bytes if file else None,
                content_bytes=file.content_bytes if file else None,
                uploaded_by=file.created_by if file else None,
                uploaded_at=file.created_at if file else None,
                datasheet=file.report if file else None,
            )
        )
    return DossierData(
        data_sources=[DossierDataSource.model_validate(source) for source in sources],
        files=described,
    )


def _validation(file: TrainingFile, report: dict[str, Any]) -> DossierValidationStep:
    return DossierValidationStep(
        # as validated at upload; an erased file's row says "deleted" since
        status=report.get("status", file.status),
        format=report.get("format"),
        lines=report.get("lines"),
        examples=report.get("examples", file.examples),
        faults=(report.get("faults") or {}).get("count"),
        exact_duplicates=report.get("exact_duplicates"),
        near_duplicates=report.get("near_duplicates"),
        tokens=report.get("tokens"),
        tokenizer=report.get("tokenizer"),
    )


def _pii(file: TrainingFile, pii: dict[str, Any]) -> DossierPiiStep:
    return DossierPiiStep(
        action=file.pii_action,
        recogniser_set=pii.get("recogniser_set"),
        findings=pii.get("findings"),
        by_type=[
            DossierPiiCount(type=kind, findings=value.get("findings"), lines=value.get("lines"))
            for kind, value in sorted((pii.get("by_type") or {}).items())
        ],
    )


def _redaction(redaction: DossierRedaction) -> DossierRedactionStep:
    return DossierRedactionStep(
        input_sha256=redaction.input_sha256,
        output_sha256=redaction.output_sha256,
        recogniser_set=redaction.recogniser_set,
        settings=redaction.settings,
        redacted_lines=redaction.redacted_lines,
    )


def _prepared(
    entry: dict[str, Any], file: TrainingFile | None
) -> DossierPreparedFile | DossierUnheldFile:
    """validation -> PII handling -> redaction lineage (input -> output) -> erasure, deletion."""
    file_id = entry.get("file_id")
    if file is None:
        return DossierUnheldFile(file_id=file_id, steps=[], note=UNHELD_NOTE)
    report = file.report or {}
    steps: list[DossierStep] = [_validation(file, report), _pii(file, report.get("pii") or {})]
    redaction = lineage_file(entry, file).redaction
    if redaction is not None:
        steps.append(_redaction(redaction))
    if file.content_deleted_at is not None and (
        file.erasure_request_id is not None or file.deleted_at is None
    ):
        steps.append(
            DossierErasureStep(
                content_deleted_at=file.content_deleted_at,
                erasure_request_id=file.erasure_request_id,
            )
        )
    if file.deleted_at is not None:
        steps.append(DossierDeletionStep(deleted_at=file.deleted_at, deleted_by=file.deleted_by))
    return DossierPreparedFile(file_id=file_id, role=entry.get("role"), steps=steps)


def preparation(
    row: ModelVersion, *, files: dict[str, TrainingFile]
) -> list[DossierPreparedFile | DossierUnheldFile]:
    return [_prepared(entry, _file_of(entry, files)) for entry in row.data_files]


# --- 5. training, 6. evaluation ---------------------------------------------------------


def training(row: ModelVersion, *, job: FineTuningJob | None) -> DossierTraining:
    return DossierTraining(
        hyperparameters=row.hyperparameters,
        lora=job.lora if job is not None else None,
        seed=row.seed,
        library_versions=row.library_versions,
        compute=row.compute,
        job=DossierJob.model_validate(job) if job is not None else None,
    )


def evaluation(row: ModelVersion, *, job: FineTuningJob | None) -> DossierEvaluation:
    return DossierEvaluation(
        verdict=row.verdict,
        configuration=job.evaluation if job is not None else None,
        report=row.evaluation,
    )


# --- 7. approvals -----------------------------------------------------------------------


def _source_approval(source: DataSource) -> DossierSourceApproval:
    return DossierSourceApproval(
        data_source=source.id,
        proposed_by=source.proposed_by,
        proposed_at=source.proposed_at,
        approved_by=source.approved_by,
        approved_at=source.approved_at,
        approval_policy_version=source.approval_policy_version,
        revoked_by=source.revoked_by,
        revoked_at=source.revoked_at,
    )


def _promotion(row: ModelVersion, approved: PromotionRequest | None) -> DossierPromotion:
    reason = row.promotion_override_reason
    return DossierPromotion(
        request_id=approved.id if approved else None,
        requested_by=approved.requested_by if approved else None,
        requested_at=approved.requested_at if approved else None,
        request_policy_version=approved.request_policy_version if approved else None,
        promoted_by=row.promoted_by,
        promoted_at=row.promoted_at,
        approval_policy_version=approved.decision_policy_version if approved else None,
        override_reason=reason,
        override_reason_sha256=(
            hashlib.sha256(reason.encode()).hexdigest() if reason is not None else None
        ),
    )


def approvals(
    row: ModelVersion,
    *,
    sources: Iterable[DataSource],
    promotion_requests: Sequence[PromotionRequest] = (),
) -> DossierApprovals:
    """Data source proposers and approvers, the training request and its decisions,
    promotion (who asked, who approved, under which policy versions, with any override)
    and every request for it, retirement, deletion."""
    approved = next((r for r in promotion_requests if r.status == "approved"), None)
    return DossierApprovals(
        data_sources=[_source_approval(source) for source in sources],
        training_request=DossierTrainingRequest(
            requested_by=row.requested_by, job_id=row.job_id, decisions=row.decisions
        ),
        promotion=_promotion(row, approved),
        promotion_requests=[
            DossierPromotionRequest.model_validate(request, from_attributes=True)
            for request in promotion_requests
        ],
        retirement=DossierRetirement(retired_by=row.retired_by, retired_at=row.retired_at),
        deletion=DossierDeletion(deleted_by=row.deleted_by, deleted_at=row.deleted_at),
    )
