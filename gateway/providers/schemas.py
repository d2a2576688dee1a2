"""What the provider routes take and answer. A provider's secret appears nowhere here:
only `credential_ref`, the name of where it is read from (gateway.providers.credentials)."""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from gateway.base_models.schemas import BASE_MODEL_NAME
from gateway.data_sources.schemas import DATA_SOURCE_ID, PROVIDER_NAME, Region, TransferRecord
from gateway.fields import FreeText
from gateway.providers.decisions import ExportDecision
from gateway.providers.models import ProviderView

ProviderKind = Literal["openai-compatible"]
ProviderStatus = Literal["active", "retired"]
ENV_PREFIX = "TUNEGATE_PROVIDER_"
# `env:TUNEGATE_PROVIDER_<NAME>` or `file:<absolute path>` (gateway.providers.credentials
# says which ones are read).
CREDENTIAL_REF = re.compile(
    rf"^(?:env:{ENV_PREFIX}[A-Z0-9_]{{1,100}}|file:/[^\x00-\x1f]{{1,4095}})$"
)
# The provider's own id of a model: printable ASCII without spaces
# ("meta-llama/Meta-Llama-3.1-8B-Instruct", "ft:gpt-4o-mini:org::abc").
ProviderModelId = Annotated[str, StringConstraints(pattern=r"^[\x21-\x7e]{1,256}$")]
MAX_URL_LENGTH = 2048
_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$"
)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_base_url(value: str) -> str:
    """An absolute https URL (http only to this machine: localhost, 127.0.0.0/8, ::1) with
    no credentials, query or fragment in it; returned without its trailing slash."""
    if any(ch.isspace() or ord(ch) < 0x20 for ch in value):
        raise ValueError("base_url must not contain whitespace or control characters")
    try:
        parts = urlsplit(value)
        port = parts.port  # a malformed port raises here
    except ValueError:
        raise ValueError("base_url is not a valid URL") from None
    scheme, host = parts.scheme.lower(), (parts.hostname or "")
    if scheme not in ("https", "http") or not host:
        raise ValueError("base_url must be an absolute https:// URL")
    if parts.username is not None or parts.password is not None:
        raise ValueError("base_url must not carry credentials: name them in credential_ref")
    if parts.query or parts.fragment or value.endswith(("?", "#")):
        raise ValueError("base_url must not have a query or a fragment")
    if port == 0:
        raise ValueError("base_url has port 0")
    if not _HOSTNAME.match(host) and not _is_ip(host):
        raise ValueError("base_url has an invalid host name")
    if scheme == "http" and not _is_loopback(host):
        raise ValueError("base_url must use https (http only for localhost)")
    return value.rstrip("/")


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class OfferedModel(BaseModel):
    """A base model the provider offers, under a name an admin chooses for it."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        pattern=BASE_MODEL_NAME.pattern,
        max_length=64,
        description="the name users give as a job's `model`: unique across providers and base "
        "models",
    )
    provider_model: ProviderModelId = Field(description="the provider's own id of the model")


class ProviderCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        pattern=PROVIDER_NAME.pattern,
        max_length=64,
        description="a lowercase slug; it names the provider in the policy (`provider:<name>`)",
    )
    base_url: str = Field(
        max_length=MAX_URL_LENGTH,
        description="the provider's OpenAI-compatible API, e.g. https://api.example.com/v1 "
        "(https; http only for localhost)",
    )
    kind: ProviderKind = "openai-compatible"
    models: list[OfferedModel] = Field(min_length=1, max_length=256)
    regions: list[Annotated[Region, Field(max_length=40)]] = Field(
        min_length=1, max_length=32, description="the regions the provider processes data in"
    )
    credential_ref: str = Field(
        pattern=CREDENTIAL_REF.pattern,
        max_length=4100,
        description=f"where the API key is read from: `env:{ENV_PREFIX}<NAME>` or "
        "`file:/path` (a file in the gateway's credentials directory); the key itself is never "
        "stored, returned or logged",
    )
    description: FreeText = Field("", max_length=4000)

    _base_url = field_validator("base_url")(check_base_url)

    @model_validator(mode="after")
    def _no_duplicates(self) -> ProviderCreate:
        names = [model.name for model in self.models]
        if len(set(names)) != len(names):
            raise ValueError("models has duplicate names")
        if len(set(self.regions)) != len(self.regions):
            raise ValueError("regions has duplicates")
        return self


class ProviderPublic(BaseModel):
    id: str
    object: Literal["provider"] = "provider"
    name: str
    kind: ProviderKind
    base_url: str
    models: list[OfferedModel]
    regions: list[str]
    credential_ref: str = Field(description="where the key is read from (never the key)")
    description: str
    status: ProviderStatus
    registered_by: str
    created_at: int
    retired_by: str | None
    retired_at: int | None

    @classmethod
    def of(cls, view: ProviderView) -> ProviderPublic:
        row = view.provider
        return cls(
            id=row.name,
            name=row.name,
            kind=row.kind,
            base_url=row.base_url,
            models=[
                OfferedModel(name=m.name, provider_model=m.provider_model) for m in view.models
            ],
            regions=list(row.regions),
            credential_ref=row.credential_ref,
            description=row.description,
            status=row.status,
            registered_by=row.registered_by,
            created_at=row.created_at,
            retired_by=row.retired_by,
            retired_at=row.retired_at,
        )


class ProvidersPage(BaseModel):
    object: Literal["list"] = "list"
    data: list[ProviderPublic]
    has_more: bool
    next_after: str | None = None


class ExportCheck(BaseModel):
    """What the dry run asks: may I send this data source's data to the provider?"""

    model_config = ConfigDict(extra="forbid")

    data_source: str = Field(pattern=DATA_SOURCE_ID.pattern, max_length=64)


class ExportRefusalPublic(BaseModel):
    gate: str = Field(
        description="policy, provider_active, data_source_approved, classification, transfer"
    )
    status: int = Field(description="the HTTP status an export would be refused with")
    code: str
    message: str
    details: dict[str, Any] | None = None


class ExportCheckPublic(BaseModel):
    object: Literal["provider.export_check"] = "provider.export_check"
    provider: str
    data_source: str
    allowed: bool
    policy_version: str = Field(description="the policy version that decided")
    refusals: list[ExportRefusalPublic] = Field(description="every gate that refuses, in order")
    decisions: list[dict[str, Any]] = Field(description="the decisions and gates that passed")
    transfer: TransferRecord | None = Field(
        None, description="the data source's transfer record that allows it (personal data)"
    )

    @classmethod
    def of(cls, decision: ExportDecision) -> ExportCheckPublic:
        return cls(
            provider=decision.provider,
            data_source=decision.data_source,
            allowed=decision.allowed,
            policy_version=decision.policy_version,
            refusals=[ExportRefusalPublic(**refusal.public()) for refusal in decision.refusals],
            decisions=decision.decisions,
            transfer=None
            if decision.transfer is None
            else TransferRecord.model_validate(decision.transfer),
        )
