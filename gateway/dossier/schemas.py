"""The lineage and the technical dossier (tunegate-dossier/v1), as the API returns them.

The dossier's sections are built by gateway.dossier.sections (one builder each) and told
in Markdown by gateway.dossier.markdown; what they quote from other code's JSON columns is
typed in gateway.dossier.records. Every field below is always present (null when there
is nothing to say), as the builders write them.
"""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field

from gateway.dossier.annex_iv_schemas import DossierAnnexIV
from gateway.dossier.mislabels import DossierMislabels
from gateway.dossier.production import DossierProduction
from gateway.dossier.records import (
    DossierAdapterFile,
    DossierCompute,
    DossierDatasheet,
    DossierDecision,
    DossierDuplicates,
    DossierEstimate,
    DossierEvaluationReport,
    DossierEvaluationSettings,
    DossierHyperparameters,
    DossierLora,
    DossierRedaction,
    DossierRedactionSettings,
    DossierTokenStats,
)
from gateway.registry.schemas import ModelClearedFlag, ModelFlag

DOSSIER_FORMAT: Final = "tunegate-dossier/v1"
# For models with defaulted fields (a step's name, the format): they are always written,
# so the OpenAPI schema lists them as required (a discriminator must be).
ALWAYS_WRITTEN = ConfigDict(json_schema_serialization_defaults_required=True)


# --- lineage ----------------------------------------------------------------------------


class LineageFile(BaseModel):
    """A data file as the model version recorded it (its hashes win: they are what was
    trained on), beside what the file's row says now (erased or not)."""

    role: str | None
    file_id: str
    data_source: str | None
    filename: str | None
    sha256: str | None
    content_sha256: str | None
    examples: int | None
    pii_action: str | None
    # input -> output hash and the recogniser set, when the source redacts
    redaction: DossierRedaction | None
    status: str | None
    content_deleted_at: str | None
    erasure_request_id: str | None
    deleted_at: int | None = Field(description="DELETE /v1/files/{id}, epoch seconds")


class LineagePromotion(BaseModel):
    """Who promoted the version, and whether it took an override."""

    promoted_by: str | None
    promoted_at: int | None
    override: bool


class LineageVersion(BaseModel):
    """One version of the chain: what it was trained from, on and under which decisions."""

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
    hyperparameters: DossierHyperparameters
    data_files: list[LineageFile]
    decisions: list[DossierDecision]
    verdict: str | None
    promotion: LineagePromotion
    flags: list[ModelFlag]
    deleted_at: int | None = Field(description="when its adapter was deleted, epoch seconds")


class LineageBase(BaseModel):
    """The base model at the root of the chain: the manifest hash the versions recorded
    beside the one the registry holds now."""

    name: str
    manifest_sha256: str
    # None when the registry has no row of that name (it was never registered here)
    registered_manifest_sha256: str | None
    license: str | None
    status: str | None


class LineagePublic(BaseModel):
    """A fine-tuned version's lineage: its chain of parents down to the base model."""

    model_config = ALWAYS_WRITTEN

    object: Literal["model.lineage"] = "model.lineage"
    model_id: str
    # this version first, then its parent, and so on down to the first fine-tune
    chain: list[LineageVersion]
    base_model: LineageBase
    # a parent named by a version that the registry does not hold (or another tenant's)
    broken_at: str | None = None


# --- 1. general description -------------------------------------------------------------


class DossierGeneral(BaseModel):
    """What the model version is: identity, hashes, status and provider (the tenant)."""

    model_id: str
    provider: str = Field(description="the tenant that trained it")
    status: str
    created_at: int = Field(description="epoch seconds")
    base_model: str
    base_manifest_sha256: str
    parent_model_id: str | None = Field(description="the version this one was tuned from")
    adapter_sha256: str = Field(description="sha256 of the adapter weights")
    adapter_files: list[DossierAdapterFile]
    job_id: str
    requested_by: str
    deleted_at: int | None = Field(
        description="when its adapter bytes were deleted (epoch seconds); the record stays"
    )


# --- 2. intended purpose ----------------------------------------------------------------


class DossierPurposeSource(BaseModel):
    """Whether a data source's approval covers the purpose the job trained for."""

    data_source: str
    name: str
    allowed_purposes: list[str]
    purpose_allowed: bool


class DossierIntendedPurpose(BaseModel):
    """What the model is for: the purpose it was registered and trained for, against each
    data source's allowed purposes."""

    purpose: str = Field(description="as the model version records it")
    job_purpose: str = Field(description="as the job asked (the version's when the job is gone)")
    data_sources: list[DossierPurposeSource]


# --- 3. data ----------------------------------------------------------------------------


class DossierDataSource(BaseModel):
    """A data source the model was trained on, as its row says now."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    description: str
    classification: str
    contains_personal_data: bool
    legal_basis: str | None
    allowed_purposes: list[str]
    owner: str
    retention_days: int
    pii_action: str
    min_examples: int
    status: str


class DossierFile(LineageFile):
    """A file version the model was trained on: its lineage, the upload's facts and its
    datasheet (null where the file's row is not held here)."""

    bytes: int | None = Field(description="size as uploaded")
    content_bytes: int | None = Field(description="size of what is stored and trained on")
    uploaded_by: str | None
    uploaded_at: int | None = Field(description="epoch seconds")
    datasheet: DossierDatasheet | None


class DossierData(BaseModel):
    """The data: its sources and the file versions, with their datasheets."""

    data_sources: list[DossierDataSource]
    files: list[DossierFile]


# --- 4. data preparation ----------------------------------------------------------------


class DossierValidationStep(BaseModel):
    """The file's validation at upload, from its datasheet (status as validated then: an
    erased file's row says "deleted" since)."""

    model_config = ALWAYS_WRITTEN

    step: Literal["validation"] = "validation"
    status: str | None
    format: str | None
    lines: int | None
    examples: int | None
    faults: int | None = Field(description="how many lines were refused")
    exact_duplicates: DossierDuplicates | None
    near_duplicates: DossierDuplicates | None
    tokens: DossierTokenStats | None
    tokenizer: str | None


class DossierPiiCount(BaseModel):
    """Findings of one PII kind."""

    type: str
    findings: int | None
    lines: int | None


class DossierPiiStep(BaseModel):
    """The PII scan: the data source's action and what the recognisers found."""

    model_config = ALWAYS_WRITTEN

    step: Literal["pii"] = "pii"
    action: str
    recogniser_set: str | None
    findings: int | None
    by_type: list[DossierPiiCount] = Field(description="by kind, sorted by kind")


class DossierRedactionStep(BaseModel):
    """The redaction: the upload's hash -> the hash of the derivative trained on."""

    model_config = ALWAYS_WRITTEN

    step: Literal["redaction"] = "redaction"
    input_sha256: str | None
    output_sha256: str | None
    recogniser_set: str | None
    settings: DossierRedactionSettings | None
    redacted_lines: int | None


class DossierErasureStep(BaseModel):
    """The file's content was erased (its hashes and datasheet stay)."""

    model_config = ALWAYS_WRITTEN

    step: Literal["erasure"] = "erasure"
    content_deleted_at: str
    erasure_request_id: str | None


class DossierDeletionStep(BaseModel):
    """The file was deleted (DELETE /v1/files/{id}, not erasure): its content is gone, its
    hashes and datasheet stay."""

    model_config = ALWAYS_WRITTEN

    step: Literal["deletion"] = "deletion"
    deleted_at: int = Field(description="epoch seconds")
    deleted_by: str | None


DossierStep = Annotated[
    DossierValidationStep
    | DossierPiiStep
    | DossierRedactionStep
    | DossierErasureStep
    | DossierDeletionStep,
    Field(discriminator="step"),
]


class DossierPreparedFile(BaseModel):
    """One file's preparation, in order: validation -> PII -> redaction -> erasure, deletion."""

    file_id: str
    role: str | None
    steps: list[DossierStep]


class DossierUnheldFile(BaseModel):
    """A file the model names whose row is not held here (another tenant's, or gone)."""

    file_id: str
    steps: list[DossierStep] = Field(description="always empty")
    note: str


# --- 5. training ------------------------------------------------------------------------


class DossierJob(BaseModel):
    """The fine-tuning job that produced the version."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    status: str
    model: str = Field(description="what was asked: a base model or a fine-tuned parent")
    created_at: int
    finished_at: int | None
    trained_tokens: int | None
    executor: str
    estimate: DossierEstimate
    attempts: int


class DossierTraining(BaseModel):
    """How the version was trained: hyperparameters, LoRA settings, seed, library versions,
    compute, and the job (null where the job's row is gone)."""

    hyperparameters: DossierHyperparameters
    lora: DossierLora | None = Field(description="as the job asked")
    seed: int
    library_versions: dict[str, str] = Field(description="package -> version, as the run had")
    compute: DossierCompute
    job: DossierJob | None


# --- 6. evaluation ----------------------------------------------------------------------


class DossierEvaluation(BaseModel):
    """The evaluation against the baselines and its verdict (passed, failed, or null when
    the run was not evaluated)."""

    verdict: str | None
    configuration: DossierEvaluationSettings | None = Field(description="as the job asked")
    report: DossierEvaluationReport | None


# --- 7. approvals -----------------------------------------------------------------------


class DossierSourceApproval(BaseModel):
    """Who proposed and who approved a data source (never the same person), under which
    policy version; and its revocation, if any."""

    data_source: str
    proposed_by: str
    proposed_at: str
    approved_by: str | None
    approved_at: str | None
    approval_policy_version: str | None
    revoked_by: str | None
    revoked_at: str | None


class DossierTrainingRequest(BaseModel):
    """Who asked for the training, and every decision the job passed."""

    requested_by: str
    job_id: str
    decisions: list[DossierDecision]


class DossierPromotion(BaseModel):
    """Who asked for the version to go to production and who approved it (never the same
    person, nor whoever trained it), the policy version that allowed each step, and the
    override reason when the evaluation had not passed (its sha256 is what the audit trail
    holds)."""

    request_id: str | None = Field(description="the approved promotion request")
    requested_by: str | None
    requested_at: int | None = Field(description="epoch seconds")
    request_policy_version: str | None = Field(description="the version that allowed asking")
    promoted_by: str | None = Field(description="the compliance officer who approved")
    promoted_at: int | None = Field(description="epoch seconds")
    approval_policy_version: str | None = Field(description="the version that allowed the approval")
    override_reason: str | None
    override_reason_sha256: str | None


class DossierPromotionRequest(BaseModel):
    """One request to promote the version, whatever became of it: who asked and why, on
    which verdict, who decided and under which policy versions."""

    id: str
    status: str = Field(description="pending, approved, rejected or withdrawn")
    requested_by: str
    requested_at: int = Field(description="epoch seconds")
    reason: str
    verdict: str | None = Field(description="the evaluation verdict when it was asked")
    override_reason: str | None
    request_policy_version: str | None
    decided_by: str | None
    decided_at: int | None = Field(description="epoch seconds")
    decision_reason: str | None
    decision_policy_version: str | None


class DossierRetirement(BaseModel):
    """Who retired the version, and when (epoch seconds)."""

    retired_by: str | None
    retired_at: int | None


class DossierDeletion(BaseModel):
    """Who deleted the version's adapter, and when (epoch seconds): the record stays."""

    deleted_by: str | None
    deleted_at: int | None


class DossierApprovals(BaseModel):
    """Who approved what: the data sources, the training request, promotion (and every
    request for it), retirement, deletion."""

    data_sources: list[DossierSourceApproval]
    training_request: DossierTrainingRequest
    promotion: DossierPromotion
    promotion_requests: list[DossierPromotionRequest]
    retirement: DossierRetirement
    deletion: DossierDeletion


# --- 10. audit --------------------------------------------------------------------------


class DossierCheckpoint(BaseModel):
    """The signed tree head the proofs are against (audit.checkpoints.Checkpoint.to_json);
    check it with the public key beside it."""

    model_config = ConfigDict(extra="allow")

    format: str
    origin: str
    tree_size: int
    root_hash: str
    ts: str
    key_id: str
    signature: str = Field(description="Ed25519 over note, base64")
    note: str = Field(description="the exact text the signature covers")


class DossierPublicKey(BaseModel):
    """The key that signed the checkpoint."""

    key_id: str
    pem: str


class DossierEvent(BaseModel):
    """An audit event as the trail serves it: its body's fields (keys in the body's
    canonical order) and the chain hashes."""

    model_config = ConfigDict(extra="allow")

    action: str
    actor: str
    decision: str
    details: dict[str, Any] = Field(description="each action's own ids, hashes and counts")
    policy_version: str | None
    resource: str
    seq: int
    tenant: str
    ts: str
    v: int
    prev_hash: str
    hash: str


class DossierProof(BaseModel):
    """The event's Merkle inclusion proof against the checkpoint's tree (check it offline
    with `tunegate audit verify-proof`)."""

    model_config = ConfigDict(extra="allow")

    format: str
    seq: int
    leaf_index: int
    tree_size: int
    leaf_hash: str
    body: str = Field(description="the event's canonical body, the leaf's preimage")
    hashes: list[str]
    root_hash: str


class DossierAuditEntry(BaseModel):
    """An event and the proof that the checkpoint's tree holds it."""

    event: DossierEvent
    proof: DossierProof


class DossierAudit(BaseModel):
    """The audit events behind the dossier's statements, each with its inclusion proof
    against the signed checkpoint (events chained after it are left out)."""

    checkpoint: DossierCheckpoint | None
    public_key: DossierPublicKey
    scopes: list[str] = Field(description="the resources whose events were read")
    truncated: bool = Field(description="whether the event list was cut at its bound")
    events: list[DossierAuditEntry]


# --- the dossier ------------------------------------------------------------------------


class DossierPublic(BaseModel):
    """An EU AI Act Annex IV style technical dossier of one fine-tuned model version."""

    model_config = ALWAYS_WRITTEN

    format: Literal["tunegate-dossier/v1"] = DOSSIER_FORMAT
    model_id: str
    generated_at: str
    generated_by: str
    general: DossierGeneral
    intended_purpose: DossierIntendedPurpose
    data: DossierData
    preparation: list[DossierPreparedFile | DossierUnheldFile]
    training: DossierTraining
    evaluation: DossierEvaluation
    approvals: DossierApprovals
    lineage: LineagePublic
    flags: list[ModelFlag]
    cleared_flags: list[ModelClearedFlag]
    audit: DossierAudit
    production: DossierProduction
    # EU AI Act Annex IV's nine points, each filled from records or "not recorded"
    annex_iv: DossierAnnexIV | None = None
    # Training lines the tuned model disagreed with, their reviews, and lines left out.
    suspected_mislabels: DossierMislabels | None = None
