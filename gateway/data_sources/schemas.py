from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from gateway.fields import FreeText, Purpose, Subject


class Classification(StrEnum):
    public = "public"
    internal = "internal"
    confidential = "confidential"
    restricted = "restricted"


class PiiAction(StrEnum):
    block = "block"
    redact = "redact"
    allow = "allow"


class LegalBasis(StrEnum):
    """GDPR Art. 6(1) lawful bases."""

    consent = "consent"
    contract = "contract"
    legal_obligation = "legal_obligation"
    vital_interests = "vital_interests"
    public_task = "public_task"
    legitimate_interests = "legitimate_interests"


class DataOrigin(StrEnum):
    """Where the data comes from, in the kinds of the AI Office's template for the public
    summary of training content (EU AI Act Art. 53(1)(d), section 2)."""

    public = "public"  # publicly available datasets
    licensed = "licensed"  # private datasets obtained from third parties
    crawled = "crawled"  # crawled and scraped from online sources
    user = "user"  # user data
    synthetic = "synthetic"
    private = "private"  # the provider's own, not public (the template's "other sources")


# A provider's name (gateway.providers): a lowercase slug, since it names the provider in
# the policy (`provider:<name>`). Defined here, where a transfer record names one.
PROVIDER_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$")
# Where a provider processes data and where a transfer may go: a lowercase region code
# ("eu", "de", "eu-west-1", "us-east-1"), matched exactly.
Region = Annotated[str, StringConstraints(pattern=r"^[a-z]{2}(?:-[a-z0-9]{1,16}){0,3}$")]


class TransferBasis(StrEnum):
    """What makes sending personal data to a provider lawful (GDPR Art. 28, Chapter V)."""

    processor_agreement = "processor_agreement"  # Art. 28(3): a processor, no third country
    adequacy_decision = "adequacy_decision"  # Art. 45
    standard_contractual_clauses = "standard_contractual_clauses"  # Art. 46(2)(c)
    binding_corporate_rules = "binding_corporate_rules"  # Art. 47
    explicit_consent = "explicit_consent"  # Art. 49(1)(a)


TRANSFER_BASIS_ARTICLE = {
    TransferBasis.processor_agreement: "GDPR Art. 28(3)",
    TransferBasis.adequacy_decision: "GDPR Art. 45",
    TransferBasis.standard_contractual_clauses: "GDPR Art. 46(2)(c)",
    TransferBasis.binding_corporate_rules: "GDPR Art. 47",
    TransferBasis.explicit_consent: "GDPR Art. 49(1)(a)",
}


class TransferRecord(BaseModel):
    """One transfer of the source's personal data that its record allows: to a region (and
    only to one provider, when `provider` is set), on a legal basis."""

    model_config = ConfigDict(extra="forbid")

    region: Region = Field(max_length=40)
    legal_basis: TransferBasis
    provider: str | None = Field(
        None,
        pattern=PROVIDER_NAME.pattern,
        description="only this provider; null: any provider that processes data in the region",
    )


class DataSourceCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9 ._-]*$")
    description: FreeText = Field("", max_length=4000)
    classification: Classification
    contains_personal_data: bool = False
    legal_basis: LegalBasis | None = None
    allowed_purposes: list[Purpose] = Field(min_length=1, max_length=32)
    owner: Subject = Field(description="the accountable data owner (a subject id)")
    retention_days: int = Field(ge=1, le=36_500)
    pii_action: PiiAction = PiiAction.block
    min_examples: int = Field(500, ge=1, le=10_000_000)
    # data-quality gates (issue 17)
    max_conflict_rate: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description="refuse jobs whose training file has more of its examples in conflict "
        "groups (same or near-same prompt, different answers) than this share; null: no gate",
    )
    overlap_threshold: float = Field(
        0.8,
        gt=0.0,
        le=1.0,
        description="similarity at which a validation line repeats a training line",
    )
    max_overlapping_lines: int = Field(
        0, ge=0, le=10_000_000, description="validation lines allowed to repeat training lines"
    )
    # the regulators' records (issue 16 §4: gateway.compliance); "not recorded" when absent
    data_origin: DataOrigin | None = Field(
        None, description="kind of source for the Art. 53(1)(d) training-content summary"
    )
    data_subject_categories: list[FreeText] | None = Field(
        None, max_length=32, description="GDPR Art. 30(1)(c): e.g. customers, employees"
    )
    data_categories: list[FreeText] | None = Field(
        None, max_length=32, description="GDPR Art. 30(1)(c): e.g. contact details, chat text"
    )
    # exports to external providers (gateway.providers): personal data leaves only on one
    transfers: list[TransferRecord] | None = Field(
        None,
        max_length=32,
        description="GDPR Art. 30(1)(e): the transfers of the source's personal data to external "
        "providers that are allowed; an export of personal data needs one whose region is a "
        "region the provider processes data in",
    )

    @model_validator(mode="after")
    def _personal_data_needs_a_legal_basis(self) -> DataSourceCreate:
        if self.contains_personal_data and self.legal_basis is None:
            raise ValueError("legal_basis is required when contains_personal_data is true")
        if self.pii_action is PiiAction.allow and not (
            self.contains_personal_data and self.legal_basis is not None
        ):
            raise ValueError("pii_action 'allow' needs contains_personal_data and a legal_basis")
        if len(set(self.allowed_purposes)) != len(self.allowed_purposes):
            raise ValueError("allowed_purposes has duplicates")
        return self


class DataSourceRevoke(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: FreeText = Field(min_length=3, max_length=2000)


class DataSourcePublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    object: Literal["data_source"] = "data_source"
    tenant: str
    name: str
    description: str
    classification: Classification
    contains_personal_data: bool
    legal_basis: str | None
    allowed_purposes: list[str]
    owner: str
    retention_days: int
    pii_action: PiiAction
    min_examples: int
    max_conflict_rate: float | None = None
    overlap_threshold: float = 0.8
    max_overlapping_lines: int = 0
    status: Literal["proposed", "approved", "revoked"]
    proposed_by: str
    proposed_at: str
    approved_by: str | None
    approved_at: str | None
    approval_policy_version: str | None
    revoked_by: str | None
    revoked_at: str | None
    revoke_reason: str | None
    # issue 16 §3-4 (gateway.retention, gateway.compliance)
    legal_hold: bool = False
    legal_hold_reason: str | None = None
    legal_hold_by: str | None = None
    legal_hold_at: str | None = None
    data_origin: str | None = None
    data_subject_categories: list[str] | None = None
    data_categories: list[str] | None = None
    transfers: list[TransferRecord] | None = None


class DataSourcesPage(BaseModel):
    object: Literal["list"] = "list"
    data: list[DataSourcePublic]
    has_more: bool
    next_after: str | None = None


DATA_SOURCE_ID = re.compile(r"^ds-[0-9a-f]{16}$")
