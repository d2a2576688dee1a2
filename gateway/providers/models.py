from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import JSON, BigInteger, Column, ForeignKey, Index, String, Text
from sqlmodel import Field, SQLModel


class Provider(SQLModel, table=True):
    """An external fine-tuning provider with an OpenAI-compatible API. Global, like base
    models; its name names it in the policy (`provider:<name>`). Names are never reused:
    deleting one retires it and keeps the row, so lineage that cites it stays true.

    `credential_ref` says where the secret is read from (`env:NAME` or `file:/path`): the
    secret itself is never stored, returned or logged."""

    __tablename__ = "providers"
    __table_args__ = (Index("ix_providers_status", "status"),)

    name: str = Field(sa_column=Column(String(64), primary_key=True))
    kind: str = Field(sa_column=Column(String(32), nullable=False))
    base_url: str = Field(sa_column=Column(Text, nullable=False))
    regions: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    credential_ref: str = Field(sa_column=Column(Text, nullable=False))
    description: str = Field(default="", sa_column=Column(Text, nullable=False))
    status: str = Field(sa_column=Column(String(16), nullable=False))
    registered_by: str = Field(sa_column=Column(String(128), nullable=False))
    created_at: int = Field(sa_column=Column(BigInteger, nullable=False))
    retired_by: str | None = Field(default=None, sa_column=Column(String(128), nullable=True))
    retired_at: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))


class ProviderModel(SQLModel, table=True):
    """A base model a provider offers, under the name an admin chose for it. The name is
    unique across providers (a job's `model` names one provider's model), never reused, and
    not the name of a base model registered before it (registration refuses one)."""

    __tablename__ = "provider_models"
    __table_args__ = (Index("ix_provider_models_provider", "provider"),)

    name: str = Field(sa_column=Column(String(64), primary_key=True))
    provider: str = Field(
        sa_column=Column(String(64), ForeignKey("providers.name"), nullable=False)
    )
    # the provider's own id of the model, e.g. "meta-llama/Meta-Llama-3.1-8B-Instruct"
    provider_model: str = Field(sa_column=Column(Text, nullable=False))


@dataclass(frozen=True)
class ProviderView:
    """A provider with the models it offers, as the API shows it."""

    provider: Provider
    models: list[ProviderModel]
