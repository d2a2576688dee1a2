from __future__ import annotations

import re
from enum import StrEnum
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from gateway.fields import FreeText

ERASURE_ID: Final = re.compile(r"^er-[0-9a-f]{16}$")


class ErasureRequestCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    subject: FreeText = Field(
        min_length=3,
        max_length=320,
        description="the data subject's identifier as it appears in the data, e.g. an email "
        "address; only a salted hash of it is kept",
    )
    reference: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9._:/#-]{1,128}$",
        description="your ticket or case number (must not itself identify the person)",
    )

    @model_validator(mode="after")
    def _subject_is_not_blank(self) -> ErasureRequestCreate:
        if not self.subject.strip():
            raise ValueError("subject must not be blank")
        return self


class ErasureDecision(StrEnum):
    delete_data = "delete_data"
    retrain = "retrain"
    accept = "accept"


class ErasureDecide(BaseModel):
    model_config = ConfigDict(extra="forbid")

    decision: ErasureDecision
    reason: FreeText | None = Field(None, min_length=3, max_length=2000)
    destroy_salt: bool = Field(
        False,
        description="forget the salt: afterwards nothing links this request to the person",
    )

    @model_validator(mode="after")
    def _accepting_needs_a_reason(self) -> ErasureDecide:
        if self.decision is ErasureDecision.accept and not self.reason:
            raise ValueError("a reason is required to accept without erasing")
        return self


class ErasureRequestPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    object: Literal["erasure_request"] = "erasure_request"
    tenant: str
    subject_sha256: str
    reference: str | None
    status: Literal["searching", "open", "decided"]
    findings: dict[str, Any]
    # a background search's progress: status (queued|running|done|failed), files, lines
    # and bytes done of their totals, resumptions, times; None for a search done inline
    search: dict[str, Any] | None = None
    requested_by: str
    requested_at: str
    decision: ErasureDecision | None
    decision_reason: str | None
    decided_by: str | None
    decided_at: str | None
    salt_destroyed: bool

    @field_validator("search", mode="before")
    @classmethod
    def _progress_only(cls, value: Any) -> Any:
        if isinstance(value, dict):  # the plan and partial matches are not for readers
            return {k: v for k, v in value.items() if k not in {"contents", "matches"}}
        return value


class ErasureRequestsPage(BaseModel):
    object: Literal["list"] = "list"
    data: list[ErasureRequestPublic]
    has_more: bool
    next_after: str | None = None
