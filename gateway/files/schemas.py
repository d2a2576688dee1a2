from __future__ import annotations

import re
from typing import Any, Final, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field

FILE_ID: Final = re.compile(r"^file-[0-9a-f]{24}$")
# The OpenAI file purposes a training file can carry; tunegate stores training data only.
PURPOSES: Final = ("fine-tune",)
UPLOAD_FIELDS: Final = ("purpose", "data_source")
# A job's metrics CSV (gateway.files.results): governed by its job, never trained on.
RESULTS_PURPOSE: Final = "fine-tune-results"


class FilePublic(BaseModel):
    """OpenAI's file object, plus where the file lives in governance terms: its data
    source, its hashes and its datasheet."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    expires_at: int | None = None
    filename: str
    purpose: str
    status: Literal["processed", "error", "deleted"]
    status_details: str | None
    data_source: str = Field(validation_alias=AliasChoices("data_source_id", "data_source"))
    sha256: str
    content_sha256: str | None
    content_bytes: int | None
    examples: int
    pii_action: str
    redaction: dict[str, Any] | None
    report: dict[str, Any]
    created_by: str
    content_deleted_at: str | None
    erasure_request_id: str | None
    # DELETE /v1/files/{id} (erasure leaves these empty and names its request instead)
    deleted_at: int | None
    deleted_by: str | None


class FileDeleted(BaseModel):
    """OpenAI's answer to `files.delete`."""

    id: str
    object: Literal["file"] = "file"
    deleted: bool


class FilesPage(BaseModel):
    object: Literal["list"] = "list"
    data: list[FilePublic]
    has_more: bool
    first_id: str | None = None
    last_id: str | None = None
