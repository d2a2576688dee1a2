from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Body, Path, Query
from fastapi.responses import StreamingResponse

from gateway.authz import Authorized
from gateway.base_models.models import RegisteredBaseModel
from gateway.deps import SessionDep, StateDep, authorize
from gateway.registry import service
from gateway.registry.models import ModelVersion
from gateway.registry.schemas import (
    BaseModelEntry,
    FineTunedModelPublic,
    ModelPromote,
    ModelPublic,
    ModelsPage,
)

router = APIRouter(prefix="/v1/models", tags=["models"])

ModelId = Annotated[str, Path(max_length=128)]


def _public(row: RegisteredBaseModel | ModelVersion) -> BaseModelEntry | FineTunedModelPublic:
    if isinstance(row, RegisteredBaseModel):
        return BaseModelEntry.model_validate(row)
    return FineTunedModelPublic.model_validate(row)


@router.get("", response_model=ModelsPage)
def list_models(
    session: SessionDep,
    state: StateDep,
    authorized: Annotated[Authorized, authorize("model:*", "list")],
    status: Annotated[
        Literal["candidate", "production", "retired", "active"] | None,
        Query(description="fine-tuned: candidate, production, retired; base: active, retired"),
    ] = None,
    flagged: Annotated[
        bool | None, Query(description="only fine-tuned versions flagged for review (true)")
    ] = None,
    after: Annotated[str | None, Query(max_length=128, pattern=r"^[A-Za-z0-9._@:-]*$")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> ModelsPage:
    """OpenAI's model list: the base models and this tenant's fine-tuned versions the
    caller may read. `?status=production` answers which models, trained on which data file
    versions, are in production."""
    rows, next_after = service.list_visible(
        session,
        state=state,
        authorized=authorized,
        status=status,
        flagged=flagged,
        after=after,
        limit=limit,
    )
    return ModelsPage(
        data=[_public(row) for row in rows],
        has_more=next_after is not None,
        next_after=next_after,
    )


@router.get("/{model_id}", response_model=ModelPublic)
def get_model(
    model_id: ModelId,
    session: SessionDep,
    authorized: Annotated[
        Authorized, authorize("{kind}:{model_id}", "read", resolve=service.kind_of)
    ],
) -> BaseModelEntry | FineTunedModelPublic:
    return _public(service.get_visible(session, authorized=authorized, model_id=model_id))


@router.get(
    "/{model_id}/adapter",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/x-tar": {}}}},
)
def download_model_adapter(
    model_id: ModelId,
    session: SessionDep,
    state: StateDep,
    authorized: Annotated[Authorized, authorize("model:{model_id}", "use")],
) -> StreamingResponse:
    """The adapter's files as a tar stream, each checked against its recorded sha256
    before the first byte goes out."""
    download = service.open_adapter(session, state=state, authorized=authorized, model_id=model_id)
    return StreamingResponse(
        download.chunks,
        media_type="application/x-tar",
        headers={
            "Content-Disposition": f'attachment; filename="{download.filename}"',
            "X-Adapter-SHA256": download.adapter_sha256,
        },
    )


@router.post("/{model_id}/promote", response_model=FineTunedModelPublic)
def promote_model(
    model_id: ModelId,
    session: SessionDep,
    authorized: Annotated[Authorized, authorize("model:{model_id}", "promote")],
    body: Annotated[ModelPromote | None, Body()] = None,
) -> FineTunedModelPublic:
    return FineTunedModelPublic.model_validate(
        service.promote(
            session,
            authorized=authorized,
            model_id=model_id,
            override_reason=body.override_reason if body is not None else None,
        )
    )


@router.post("/{model_id}/retire", response_model=FineTunedModelPublic)
def retire_model(
    model_id: ModelId,
    session: SessionDep,
    authorized: Annotated[Authorized, authorize("model:{model_id}", "retire")],
) -> FineTunedModelPublic:
    return FineTunedModelPublic.model_validate(
        service.retire(session, authorized=authorized, model_id=model_id)
    )
