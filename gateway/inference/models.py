"""The tables of governed inference: one usage row per call, the kept transcripts of the
models whose text retention a compliance officer turned on, each model's inference
settings and its traffic split (canary)."""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Column, Float, Index, Integer, String, Text
from sqlmodel import Field, SQLModel


class InferenceCall(SQLModel, table=True):
    """One call of /v1/chat/completions that passed authorization: who called which model
    (as named, and the version served after the canary split) for what purpose, the token
    counts, latency, outcome and the sha256 of the request body and of the response bytes.
    No prompt or completion text (see InferenceTranscript)."""

    __tablename__ = "inference_calls"
    __table_args__ = (
        Index("ix_inference_calls_version_created", "model_version_id", "created_ns"),
        Index("ix_inference_calls_model_created", "model_id", "created_ns"),
        Index("ix_inference_calls_tenant_created", "tenant", "created_ns"),
    )

    id: str = Field(sa_column=Column(String(40), primary_key=True))
    tenant: str = Field(sa_column=Column(String(64), nullable=False))
    model_id: str = Field(sa_column=Column(String(128), nullable=False))
    model_version_id: str | None = Field(default=None, sa_column=Column(String(128), nullable=True))
    base_model: str | None = Field(default=None, sa_column=Column(String(64), nullable=True))
    principal: str = Field(sa_column=Column(String(128), nullable=False))
    purpose: str | None = Field(default=None, sa_column=Column(String(64), nullable=True))
    prompt_tokens: int = Field(default=0, sa_column=Column(Integer, nullable=False))
    completion_tokens: int = Field(default=0, sa_column=Column(Integer, nullable=False))
    latency_ms: float = Field(default=0.0, sa_column=Column(Float, nullable=False))
    outcome: str = Field(sa_column=Column(String(64), nullable=False))  # ok | an error code
    status_code: int = Field(sa_column=Column(Integer, nullable=False))
    request_sha256: str = Field(sa_column=Column(String(64), nullable=False))
    response_sha256: str = Field(sa_column=Column(String(64), nullable=False))
    created_at: int = Field(sa_column=Column(BigInteger, nullable=False))
    created_ns: int = Field(sa_column=Column(BigInteger, nullable=False))


class InferenceTranscript(SQLModel, table=True):
    """The full prompt and completion of one call, kept only for a model whose text
    retention is on, until ``expires_at``; erasure requests search and delete these."""

    __tablename__ = "inference_transcripts"
    __table_args__ = (
        Index("ix_inference_transcripts_tenant", "tenant", "created_at"),
        Index("ix_inference_transcripts_expires", "expires_at"),
    )

    call_id: str = Field(sa_column=Column(String(40), primary_key=True))
    tenant: str = Field(sa_column=Column(String(64), nullable=False))
    model_version_id: str = Field(sa_column=Column(String(128), nullable=False))
    principal: str = Field(sa_column=Column(String(128), nullable=False))
    prompt: str = Field(sa_column=Column(Text, nullable=False))  # the messages, as JSON
    completion: str = Field(sa_column=Column(Text, nullable=False))
    created_at: int = Field(sa_column=Column(BigInteger, nullable=False))
    expires_at: int = Field(sa_column=Column(BigInteger, nullable=False))


class InferenceModelSettings(SQLModel, table=True):
    """A model's inference settings a compliance officer set: whether full text is kept
    and for how long."""

    __tablename__ = "inference_model_settings"

    model_id: str = Field(sa_column=Column(String(128), primary_key=True))
    tenant: str = Field(sa_column=Column(String(64), nullable=False))
    keep_text: bool = Field(default=False, sa_column=Column(Boolean, nullable=False))
    retention_days: int = Field(default=0, sa_column=Column(Integer, nullable=False))
    set_by: str = Field(sa_column=Column(String(128), nullable=False))
    set_at: int = Field(sa_column=Column(BigInteger, nullable=False))
    policy_version: str = Field(sa_column=Column(String(64), nullable=False))


class InferenceTrafficSplit(SQLModel, table=True):
    """Calls naming ``model_id`` (its production version) go ``percent`` % to
    ``candidate_id``; set by an admin, audited. percent 0 ends the canary."""

    __tablename__ = "inference_traffic_splits"

    model_id: str = Field(sa_column=Column(String(128), primary_key=True))
    tenant: str = Field(sa_column=Column(String(64), nullable=False))
    candidate_id: str | None = Field(default=None, sa_column=Column(String(128), nullable=True))
    percent: float = Field(default=0.0, sa_column=Column(Float, nullable=False))
    reason: str = Field(sa_column=Column(Text, nullable=False))
    set_by: str = Field(sa_column=Column(String(128), nullable=False))
    set_at: int = Field(sa_column=Column(BigInteger, nullable=False))
    policy_version: str = Field(sa_column=Column(String(64), nullable=False))
