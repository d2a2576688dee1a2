from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class AuditEventPublic(BaseModel):
    model_config = ConfigDict(extra="allow")

    seq: int
    ts: str
    actor: str
    tenant: str
    action: str
    resource: str
    decision: str
    policy_version: str | None
    details: dict[str, Any]
    prev_hash: str
    hash: str


class AuditEventsPage(BaseModel):
    object: Literal["list"] = "list"
    data: list[AuditEventPublic]
    has_more: bool
    next_after: int | None = Field(None, description="pass as `after` for the next page")


class VerifyReason(BaseModel):
    code: str
    message: str


class AuditVerification(BaseModel):
    ok: bool
    length: int
    head: str | None
    first_bad_seq: int | None
    reason: VerifyReason | None
    checkpoints_checked: int = 0
    pending: int = Field(0, description="events recorded but not yet chained")


class CheckpointPublic(BaseModel):
    model_config = ConfigDict(extra="allow")

    tree_size: int
    root_hash: str
    ts: str
    key_id: str
    signature: str
    signed_note: str | None = Field(
        None, description="the same checkpoint as a C2SP tlog-checkpoint signed note"
    )


class CheckpointNotePublic(BaseModel):
    """One checkpoint of the history: its C2SP signed note and when it was signed."""

    id: int = Field(description="the cursor: pass as `after` for the checkpoints after it")
    tree_size: int
    root_hash: str = Field(description="base64, as in the note")
    ts: str
    note: str


class CheckpointNotesPage(BaseModel):
    object: Literal["list"] = "list"
    data: list[CheckpointNotePublic]
    has_more: bool
    next_after: int | None = Field(None, description="pass as `after` for the next page")


class ConsistencyProofPublic(BaseModel):
    format: Literal["tunegate-consistency-proof/v1"] = "tunegate-consistency-proof/v1"
    first: int
    second: int
    first_root: str = Field(description="base64 RFC 6962 root of the first tree")
    second_root: str = Field(description="base64 RFC 6962 root of the second tree")
    hashes: list[str] = Field(description="RFC 6962 PROOF(first, D[second]), base64")


class InclusionProofPublic(BaseModel):
    model_config = ConfigDict(extra="allow")

    seq: int
    leaf_index: int
    tree_size: int
    leaf_hash: str
    hashes: list[str]
    root_hash: str


class PublicKey(BaseModel):
    key_id: str
    algorithm: Literal["Ed25519"] = "Ed25519"
    public_key_pem: str
    origin: str | None = Field(None, description="origin line of the C2SP checkpoints")
    key_name: str | None = Field(None, description="signed-note key name of the signatures")
    vkey: str | None = Field(
        None, description="signed-note verifier key `<name>+<key id>+<base64 key>`"
    )
