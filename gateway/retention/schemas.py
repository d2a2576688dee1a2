from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from gateway.fields import FreeText


class LegalHoldChange(BaseModel):
    """POST (set) or DELETE (release) /v1/data_sources/{id}/legal_hold."""

    model_config = ConfigDict(extra="forbid")

    reason: FreeText = Field(min_length=3, max_length=2000)


class RetentionWarningPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    object: Literal["retention.warning"] = "retention.warning"
    file_id: str
    filename: str
    data_source_id: str
    data_source_name: str
    delete_after: int = Field(
        description="epoch seconds: the content goes at the first sweep after"
    )
    warned_at: str


class RetentionWarningsPage(BaseModel):
    object: Literal["list"] = "list"
    data: list[RetentionWarningPublic]
    has_more: bool
