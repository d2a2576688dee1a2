"""The lineage and the technical dossier, as the API returns them."""

from __future__ import annotations

from typing import Any, Final, Literal

from pydantic import BaseModel

from gateway.registry.schemas import ModelFlag

DOSSIER_FORMAT: Final = "tunegate-dossier/v1"


# --- lineage ----------------------------------------------------------------------------


class LineageFile(BaseModel):
    role: str | None
    file_id: str
    data_source: str | None
    filename: str | None
    sha256: str | None
    content_sha256: str | None
    examples: int | None
    pii_action: str | None
    # input -> output hash and the recogniser set, when the source redacts
    redaction: dict[str, Any] | None
    status: str | None
    content_deleted_at: str | None
    erasure_request_id: str | None


class LineagePromotion(BaseModel):
    promoted_by: str | None
    promoted_at: int | None
    override: bool


class LineageVersion(BaseModel):
    id: str
    status: str
    job_id: str
    requested_by: str
    purpose: str
    created_at: int
    base_model: str
    base_manifest_sha256: str
    parent_model_id: str | None
    adapter_sha256: str
    seed: int
    hyperparameters: dict[str, Any]
    data_files: list[LineageFile]
    decisions: list[dict[str, Any]]
    verdict: str | None
    promotion: LineagePromotion
    flags: list[ModelFlag]


class LineageBase(BaseModel):
    name: str
    manifest_sha256: str
    # None when the registry has no row of that name (it was never registered here)
    registered_manifest_sha256: str | None
    license: str | None
    status: str | None


class LineagePublic(BaseModel):
    object: Literal["model.lineage"] = "model.lineage"
    model_id: str
    # this version first, then its parent, and so on down to the first fine-tune
    chain: list[LineageVersion]
    base_model: LineageBase
    # a parent named by a version that the registry does not hold (or another tenant's)
    broken_at: str | None = None


# --- dossier ----------------------------------------------------------------------------


class DossierPublic(BaseModel):
    """An EU AI Act Annex IV style technical dossier. Sections are plain JSON objects;
    gateway.dossier.service documents what each one holds."""

    format: Literal["tunegate-dossier/v1"] = DOSSIER_FORMAT
    model_id: str
    generated_at: str
    generated_by: str
    general: dict[str, Any]
    intended_purpose: dict[str, Any]
    data: dict[str, Any]
    preparation: list[dict[str, Any]]
    training: dict[str, Any]
    evaluation: dict[str, Any]
    approvals: dict[str, Any]
    lineage: LineagePublic
    flags: list[ModelFlag]
    audit: dict[str, Any]
