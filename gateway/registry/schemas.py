from __future__ import annotations

import re
from typing import Annotated, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, computed_field

from gateway.base_models.schemas import BaseModelPublic
from gateway.fields import FreeText

# ft:<base>:<tenant>:<suffix>:<job id>, as OpenAI names fine-tuned models; the character
# set is what a path id may hold (gateway.deps.PATH_ID).
FINE_TUNED_ID: Final = re.compile(r"^ft:[A-Za-z0-9._@:-]{1,125}$")
FINE_TUNED_PREFIX: Final = "ft:"
ModelStatus = Literal["candidate", "production", "retired"]
PromotionStatus = Literal["pending", "approved", "rejected", "withdrawn"]
# promreq-<24 hex>
PROMOTION_REQUEST_ID: Final = re.compile(r"^promreq-[0-9a-f]{24}$")
# A reason people write: kept on the row, only its sha256 in the audit trail.
Reason = Annotated[FreeText, StringConstraints(min_length=3, max_length=2000)]


class DataFileRef(BaseModel):
    """One data file a model version was trained (or validated) on, as recorded at
    registration: hashes of the bytes as uploaded and of what was trained on."""

    model_config = ConfigDict(extra="allow")

    role: str | None = None
    file_id: str
    data_source: str | None = None
    sha256: str | None = None
    content_sha256: str | None = None


class ModelFlag(BaseModel):
    model_config = ConfigDict(extra="allow")

    reason: str
    ref: str
    at: str


class ModelClearedFlag(ModelFlag):
    """A flag a compliance officer cleared, with why (the reason's sha256 is what the
    audit trail holds)."""

    cleared_by: str
    cleared_at: str
    clear_reason: str
    clear_reason_sha256: str


class BaseModelEntry(BaseModelPublic):
    """A base model as /v1/models lists it."""

    kind: Literal["base"] = "base"


class FineTunedModelPublic(BaseModel):
    """OpenAI's model object (id, object, created, owned_by) for a fine-tuned version, with
    what answers "which data and which decisions made this, and is it in production"."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    object: Literal["model"] = "model"
    created: int = Field(validation_alias="created_at")
    owned_by: str = Field(validation_alias="tenant")
    kind: Literal["fine-tuned"] = "fine-tuned"
    status: ModelStatus
    base_model: str
    base_manifest_sha256: str
    parent_model_id: str | None
    job_id: str
    purpose: str
    requested_by: str
    verdict: str | None
    adapter_sha256: str
    data_files: list[DataFileRef]
    flags: list[ModelFlag]
    cleared_flags: list[ModelClearedFlag]
    promoted_by: str | None
    promoted_at: int | None
    retired_by: str | None
    retired_at: int | None
    deleted_by: str | None
    deleted_at: int | None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def deleted(self) -> bool:
        """Its adapter was deleted (DELETE /v1/models/{id}); the record stays."""
        return self.deleted_at is not None


ModelPublic = Annotated[BaseModelEntry | FineTunedModelPublic, Field(discriminator="kind")]


class ModelsPage(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelPublic]
    has_more: bool
    next_after: str | None = None


class ModelDeleted(BaseModel):
    """OpenAI's answer to `models.delete`."""

    id: str
    object: Literal["model"] = "model"
    deleted: bool


class ModelPromote(BaseModel):
    """The body of the compatibility route POST /v1/models/{id}/promote: it only asks for
    a promotion (a PromotionRequestCreate whose reason may be left out)."""

    model_config = ConfigDict(extra="forbid")

    reason: Reason | None = Field(None, description="why the model should go to production")
    override_reason: Reason | None = Field(
        None,
        description="why the model should go to production although its evaluation did not "
        "pass; kept on the request and the model, its hash in the audit trail",
    )


class ModelFlagClear(BaseModel):
    """A compliance officer clears a model's flags after review."""

    model_config = ConfigDict(extra="forbid")

    reason: Reason = Field(description="what the review found; its hash goes to the trail")
    ref: str | None = Field(
        None,
        max_length=128,
        pattern=r"^[A-Za-z0-9._@:-]+$",
        description="clear only the flags raised by this ref (a data source or an erasure "
        "request); all of the model's flags when left out",
    )


# --- promotion requests ------------------------------------------------------------------


class PromotionRequestCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: Reason = Field(description="why the model should go to production")
    override_reason: Reason | None = Field(
        None,
        description="required when the model's evaluation did not pass: why it should go "
        "to production anyway",
    )


class PromotionApprove(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: Reason | None = Field(None, description="a note on the approval")


class PromotionReject(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: Reason = Field(description="why the promotion is refused")


class PromotionRequestPublic(BaseModel):
    """A request to promote a candidate to production: the verdict it was asked on (and
    the override reason when that verdict failed), who asked, who decided, and the policy
    version that allowed each step."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    object: Literal["model.promotion_request"] = "model.promotion_request"
    model_id: str
    status: PromotionStatus
    reason: str
    verdict: str | None
    override_reason: str | None
    trained_by: str
    requested_by: str
    requested_at: int
    request_policy_version: str | None
    decided_by: str | None
    decided_at: int | None
    decision_reason: str | None
    decision_policy_version: str | None


class PromotionRequestsPage(BaseModel):
    object: Literal["list"] = "list"
    data: list[PromotionRequestPublic]
    has_more: bool
    first_id: str | None = None
    last_id: str | None = None
