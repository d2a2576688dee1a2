"""The regulators' documents: the EU AI Act Art. 53(1)(d) public summary of training
content (the AI Office's template, C(2025) 8311) of a model version, and the GDPR
Art. 30(1) records of processing of a tenant. Every figure is read from records; what no
record holds says so (TO_COMPLETE, NOT_RECORDED)."""

from __future__ import annotations

from typing import Final, Literal

from pydantic import BaseModel, Field

TO_COMPLETE: Final = "to be completed by the provider"
NOT_RECORDED: Final = "not recorded"
SUMMARY_FORMAT: Final = "tunegate-training-content-summary/v1"
RECORDS_FORMAT: Final = "tunegate-records-of-processing/v1"

# --- Art. 53(1)(d) summary ----------------------------------------------------------------


class SummaryBaseModel(BaseModel):
    name: str
    license: str | None
    description: str | None
    documentation: str | None = Field(description="where it was imported from")
    architecture: str | None
    parameter_count: int | None
    manifest_sha256: str | None


class SummarySize(BaseModel):
    modality: str
    examples: int
    tokens: int | None = Field(description="from the datasheets; null where none counted")
    range: str = Field(description="the template's size range")


class SummaryGeneral(BaseModel):
    """Template section 1."""

    provider: str
    provider_contact: str
    model_id: str
    version_created_at: int = Field(description="epoch seconds")
    placed_on_market: str | int = Field(description="promotion time (epoch seconds) or TO_COMPLETE")
    base_model: SummaryBaseModel | None
    parent_model_id: str | None
    modalities: list[str]
    size: list[SummarySize]
    content_types: str
    latest_data_collection: int | str = Field(
        description="newest upload of the training data (epoch seconds), or TO_COMPLETE"
    )


class SummarySource(BaseModel):
    data_source: str
    name: str
    description: str
    origin: str
    classification: str
    categories: list[str] | str
    contains_personal_data: bool
    files: int
    examples: int
    tokens: int | None
    volume_range: str
    first_upload: int | None
    last_upload: int | None


class SummarySourceKind(BaseModel):
    """Template section 2: one kind of source."""

    kind: str
    title: str
    sources: list[SummarySource]


class SummaryPii(BaseModel):
    data_source: str
    action: str
    recogniser_sets: list[str]
    findings: int
    redacted_lines: int


class SummaryGate(BaseModel):
    data_source: str
    min_examples: int
    max_conflict_rate: float | None
    overlap_threshold: float
    max_overlapping_lines: int


class SummaryProcessing(BaseModel):
    """Template section 3."""

    pii: list[SummaryPii]
    exact_duplicates: int
    near_duplicates: int
    quality_gates: list[SummaryGate]
    opt_outs: str = Field(description="erasure requests that removed content, or TO_COMPLETE")
    tdm_opt_outs: str
    illegal_content_removal: str


class TrainingContentSummary(BaseModel):
    object: Literal["model.training_content_summary"] = "model.training_content_summary"
    format: Literal["tunegate-training-content-summary/v1"] = SUMMARY_FORMAT
    legal_reference: str = "EU AI Act Art. 53(1)(d); AI Office template for the public summary"
    generated_at: str
    general: SummaryGeneral
    data_sources: list[SummarySourceKind]
    processing: SummaryProcessing
    to_complete: list[str] = Field(description="the fields the provider must fill in")


# --- Art. 30(1) records ---------------------------------------------------------------------


class RecordModel(BaseModel):
    model_id: str
    status: str
    callers: list[str] = Field(description="subjects granted infer on it (users and roles)")
    denied: list[str]


class RecordTransfer(BaseModel):
    """A transfer of the source's personal data to an external provider that its record
    allows (an export still needs the policy's `export` on the source and the provider)."""

    provider: str
    base_url: str
    region: str
    legal_basis: str
    legal_reference: str

    def __str__(self) -> str:
        return (
            f"{self.provider} ({self.base_url}) in {self.region}: {self.legal_basis} "
            f"({self.legal_reference})"
        )


class RecordOfProcessing(BaseModel):
    data_source: str
    name: str
    personal_data: str = Field(description="declared, found by the PII scan, or both")
    purposes: list[str]
    data_subject_categories: list[str] | str
    data_categories: list[str] | str
    pii_found: dict[str, int] = Field(description="PII kind -> findings, from the datasheets")
    legal_basis: str
    recipients: list[RecordModel]
    transfers: list[RecordTransfer] | str = Field(
        description='the allowed transfers, or "none recorded"'
    )
    retention_days: int
    legal_hold: bool
    next_deletion_due: int | None = Field(description="epoch seconds; null when nothing is held")
    erasure: str
    erased_files: int
    technical_measures: list[str]


class RecordsOfProcessing(BaseModel):
    object: Literal["compliance.records_of_processing"] = "compliance.records_of_processing"
    format: Literal["tunegate-records-of-processing/v1"] = RECORDS_FORMAT
    legal_reference: str = "GDPR Art. 30(1)"
    generated_at: str
    controller: str
    controller_contact: str
    records: list[RecordOfProcessing]
    notes: list[str]
