from __future__ import annotations

import re
from typing import Annotated, Final, Literal

from pydantic import BaseModel, ConfigDict, Field

from gateway.base_models.schemas import BaseModelPublic
from gateway.fields import FreeText

# ft:<base>:<tenant>:<suffix>:<job id>, as OpenAI names fine-tuned models; the character
# set is what a path id may hold (gateway.deps.PATH_ID).
FINE_TUNED_ID: Final = re.compile(r"^ft:[A-Za-z0-9._@:-]{1,125}$")
FINE_TUNED_PREFIX: Final = "ft:"
ModelStatus = Literal["candidate", "production", "retired"]


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
    promoted_by: str | None
    promoted_at: int | None
    retired_by: str | None
    retired_at: int | None


ModelPublic = Annotated[BaseModelEntry | FineTunedModelPublic, Field(discriminator="kind")]


class ModelsPage(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelPublic]
    has_more: bool
    next_after: str | None = None


class ModelPromote(BaseModel):
    model_config = ConfigDict(extra="forbid")

    override_reason: FreeText | None = Field(
        None,
        min_length=3,
        max_length=2000,
        description="why the model goes to production although its evaluation did not pass "
        "(or it is flagged); kept on the model, its hash in the audit trail",
    )
