from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, status

from gateway.authz import Authorized
from gateway.deps import SessionDep, StateDep, authorize
from gateway.providers import service
from gateway.providers.schemas import (
    ExportCheck,
    ExportCheckPublic,
    ProviderCreate,
    ProviderPublic,
    ProvidersPage,
)

router = APIRouter(prefix="/v1/providers", tags=["providers"])

ProviderName = Annotated[str, Path(max_length=64)]


@router.post("", response_model=ProviderPublic, status_code=status.HTTP_201_CREATED)
def register_provider(
    body: ProviderCreate,
    session: SessionDep,
    state: StateDep,
    authorized: Annotated[Authorized, authorize("provider:*", "create")],
) -> ProviderPublic:
    """Registers an external OpenAI-compatible fine-tuning provider, a global object: the
    platform admin's (`create` is seeded in the platform domain only). `credential_ref`
    names where its API key is read from; the key must be there, and is never stored or
    shown."""
    return ProviderPublic.of(
        service.register(session, state=state, authorized=authorized, body=body)
    )


@router.get("", response_model=ProvidersPage)
def list_providers(
    session: SessionDep,
    state: StateDep,
    authorized: Annotated[Authorized, authorize("provider:*", "list")],
    status: Literal["active", "retired"] | None = None,
    after: Annotated[str | None, Query(max_length=64, pattern=r"^[a-z0-9-]*$")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> ProvidersPage:
    views, next_after = service.list_visible(
        session, state=state, authorized=authorized, status=status, after=after, limit=limit
    )
    return ProvidersPage(
        data=[ProviderPublic.of(view) for view in views],
        has_more=next_after is not None,
        next_after=next_after,
    )


@router.get("/{name}", response_model=ProviderPublic)
def get_provider(
    name: ProviderName,
    session: SessionDep,
    authorized: Annotated[Authorized, authorize("provider:{name}", "read")],
) -> ProviderPublic:
    return ProviderPublic.of(service.get_visible(session, authorized=authorized, name=name))


@router.delete("/{name}", response_model=ProviderPublic)
def retire_provider(
    name: ProviderName,
    session: SessionDep,
    authorized: Annotated[Authorized, authorize("provider:{name}", "delete")],
) -> ProviderPublic:
    """Retires the provider (the platform admin's, as registering is): nothing is exported
    to it again. Its record stays, and its name and its models' names are never reused."""
    return ProviderPublic.of(service.retire(session, authorized=authorized, name=name))


@router.post("/{name}/export_check", response_model=ExportCheckPublic)
def check_export(
    name: ProviderName,
    body: ExportCheck,
    session: SessionDep,
    state: StateDep,
    authorized: Annotated[Authorized, authorize("provider:{name}", "read")],
) -> ExportCheckPublic:
    """Dry run: may you send this data source's data to the provider? The policy must allow
    `export` on the data source and on the provider; then the provider must be active, the
    source approved and not of a classification that forbids export, and a source holding
    personal data must allow the transfer (a region of the provider's, a legal basis).
    Nothing is sent; the decision is recorded with its policy version."""
    return ExportCheckPublic.of(
        service.export_check(
            session, state=state, authorized=authorized, name=name, data_source_id=body.data_source
        )
    )
