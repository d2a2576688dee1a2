"""A fine-tuned version's lineage: its chain of parents down to the base model's manifest,
and per data file what the version recorded beside what the file's row says now."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import select
from sqlmodel import Session, col

from gateway.authz import Authorized
from gateway.base_models.models import RegisteredBaseModel
from gateway.dossier.schemas import (
    LineageBase,
    LineageFile,
    LineagePromotion,
    LineagePublic,
    LineageVersion,
)
from gateway.files.models import TrainingFile
from gateway.registry import service as registry
from gateway.registry.models import ModelVersion
from gateway.registry.schemas import FINE_TUNED_ID

MAX_LINEAGE_DEPTH = 64


def _files_by_id(
    session: Session, *, tenant: str, file_ids: Iterable[str]
) -> dict[str, TrainingFile]:
    wanted = sorted(set(file_ids))
    if not wanted:
        return {}
    rows = session.scalars(
        select(TrainingFile).where(
            col(TrainingFile.tenant) == tenant, col(TrainingFile.id).in_(wanted)
        )
    ).all()
    return {row.id: row for row in rows}


def lineage_file(entry: dict[str, Any], row: TrainingFile | None) -> LineageFile:
    """A data file as the model recorded it, with what the file's row says now (erased or
    not). The hashes recorded on the model win: they are what was trained on."""
    redaction = entry.get("redaction")
    if redaction is None and row is not None and row.redaction is not None:
        redaction = {
            key: row.redaction.get(key)
            for key in (
                "input_sha256",
                "output_sha256",
                "recogniser_set",
                "settings",
                "redacted_lines",
            )
        }
    return LineageFile(
        role=entry.get("role"),
        file_id=entry.get("file_id"),
        data_source=entry.get("data_source") or (row.data_source_id if row else None),
        filename=row.filename if row else None,
        sha256=entry.get("sha256") or (row.sha256 if row else None),
        content_sha256=entry.get("content_sha256") or (row.content_sha256 if row else None),
        examples=row.examples if row else None,
        pii_action=row.pii_action if row else None,
        redaction=redaction,
        status=row.status if row else None,
        content_deleted_at=row.content_deleted_at if row else None,
        erasure_request_id=row.erasure_request_id if row else None,
        deleted_at=row.deleted_at if row else None,
    )


def _version(row: ModelVersion, files: dict[str, TrainingFile]) -> LineageVersion:
    return LineageVersion(
        id=row.id,
        status=row.status,
        job_id=row.job_id,
        requested_by=row.requested_by,
        purpose=row.purpose,
        created_at=row.created_at,
        base_model=row.base_model,
        base_manifest_sha256=row.base_manifest_sha256,
        parent_model_id=row.parent_model_id,
        adapter_sha256=row.adapter_sha256,
        seed=row.seed,
        hyperparameters=row.hyperparameters,
        data_files=[
            lineage_file(entry, files.get(entry.get("file_id", ""))) for entry in row.data_files
        ],
        decisions=row.decisions,
        verdict=row.verdict,
        promotion=LineagePromotion(
            promoted_by=row.promoted_by,
            promoted_at=row.promoted_at,
            override=row.promotion_override_reason is not None,
        ),
        flags=row.flags,
        deleted_at=row.deleted_at,
    )


def chain_of(session: Session, row: ModelVersion) -> tuple[list[ModelVersion], str | None]:
    """The version and its ancestors, newest first; and the parent id where the chain
    breaks (a parent the registry does not hold in this tenant), if it does."""
    chain = [row]
    seen = {row.id}
    current = row
    while current.parent_model_id is not None:
        parent_id = current.parent_model_id
        parent = session.get(ModelVersion, parent_id) if FINE_TUNED_ID.match(parent_id) else None
        if (
            parent is None
            or parent.tenant != row.tenant
            or parent.id in seen
            or len(chain) >= MAX_LINEAGE_DEPTH
        ):
            return chain, parent_id
        chain.append(parent)
        seen.add(parent.id)
        current = parent
    return chain, None


def build_lineage(session: Session, *, row: ModelVersion) -> LineagePublic:
    chain, broken_at = chain_of(session, row)
    files = _files_by_id(
        session,
        tenant=row.tenant,
        file_ids=(entry.get("file_id", "") for each in chain for entry in each.data_files),
    )
    root = chain[-1]
    base = session.get(RegisteredBaseModel, root.base_model)
    return LineagePublic(
        model_id=row.id,
        chain=[_version(each, files) for each in chain],
        base_model=LineageBase(
            name=root.base_model,
            manifest_sha256=root.base_manifest_sha256,
            registered_manifest_sha256=base.manifest_sha256 if base else None,
            license=base.license if base else None,
            status=base.status if base else None,
        ),
        broken_at=broken_at,
    )


def lineage(session: Session, *, authorized: Authorized, model_id: str) -> LineagePublic:
    row = registry.get_in_tenant(session, tenant=authorized.principal.tenant, model_id=model_id)
    return build_lineage(session, row=row)
