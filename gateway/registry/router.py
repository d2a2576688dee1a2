from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Body, Path, Query
from fastapi.responses import StreamingResponse

from gateway.authz import Authorized
from gateway.base_models.models import RegisteredBaseModel
from gateway.deps import SessionDep, StateDep, authorize
from gateway.registry import promotions, service
from gateway.registry.models import ModelVersion
from gateway.registry.schemas import (
    BaseModelEntry,
    FineTunedModelPublic,
    ModelDeleted,
    ModelFlagClear,
    ModelPromote,
    ModelPublic,
    ModelsPage,
    PromotionApprove,
    PromotionReject,
    PromotionRequestCreate,
    PromotionRequestPublic,
    PromotionRequestsPage,
    PromotionStatus,
)

router = APIRouter(prefix="/v1/models", tags=["models"])
promotions_router = APIRouter(prefix="/v1/promotion_requests", tags=["models"])

ModelId = Annotated[str, Path(max_length=128)]
RequestId = Annotated[str, Path(max_length=40)]
COMPAT_REASON = "asked through POST /v1/models/{id}/promote"


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
    include_deleted: Annotated[
        bool, Query(description="also fine-tuned versions whose adapter was deleted")
    ] = False,
    callable_: Annotated[
        bool,
        Query(
            alias="callable",
            description="only the models the caller may call through /v1/chat/completions "
            "(policy `infer`; production versions, candidates it asked for or reviews, active "
            "base models)",
        ),
    ] = False,
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
        include_deleted=include_deleted,
        callable_only=callable_,
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


@router.post(
    "/{model_id}/promotion_requests",
    response_model=PromotionRequestPublic,
    status_code=201,
)
def request_promotion(
    model_id: ModelId,
    body: PromotionRequestCreate,
    session: SessionDep,
    authorized: Annotated[Authorized, authorize("model:{model_id}", "promote")],
) -> PromotionRequestPublic:
    """Asks for the candidate to go to production: a pending request, which a compliance
    officer who neither asked nor trained the model approves (POST
    /v1/promotion_requests/{id}/approve) or rejects."""
    return PromotionRequestPublic.model_validate(
        promotions.create(
            session,
            authorized=authorized,
            model_id=model_id,
            reason=body.reason,
            override_reason=body.override_reason,
        )
    )


@router.post(
    "/{model_id}/promote",
    response_model=PromotionRequestPublic,
    status_code=202,
)
def promote_model(
    model_id: ModelId,
    session: SessionDep,
    authorized: Annotated[Authorized, authorize("model:{model_id}", "promote")],
    body: Annotated[ModelPromote | None, Body()] = None,
) -> PromotionRequestPublic:
    """Kept for compatibility: it no longer promotes, it asks for a promotion (as POST
    /v1/models/{id}/promotion_requests does) and answers 202 with the pending request."""
    return PromotionRequestPublic.model_validate(
        promotions.create(
            session,
            authorized=authorized,
            model_id=model_id,
            reason=(body.reason if body is not None else None) or COMPAT_REASON,
            override_reason=body.override_reason if body is not None else None,
        )
    )


@router.post("/{model_id}/clear_flag", response_model=FineTunedModelPublic)
def clear_model_flag(
    model_id: ModelId,
    body: ModelFlagClear,
    session: SessionDep,
    authorized: Annotated[Authorized, authorize("model:{model_id}", "approve")],
) -> FineTunedModelPublic:
    """A compliance officer's review clears the model's flags (or those of one `ref`), so
    that it can be promoted again."""
    return FineTunedModelPublic.model_validate(
        service.clear_flags(
            session, authorized=authorized, model_id=model_id, reason=body.reason, ref=body.ref
        )
    )


@router.delete("/{model_id}", response_model=ModelDeleted)
def delete_model(
    model_id: ModelId,
    session: SessionDep,
    state: StateDep,
    authorized: Annotated[Authorized, authorize("model:{model_id}", "delete")],
) -> ModelDeleted:
    """OpenAI's models.delete for a fine-tuned model (the tenant's admin): the adapter
    bytes go, the version, its lineage and dossier stay, marked deleted."""
    row = service.delete_model(session, state=state, authorized=authorized, model_id=model_id)
    return ModelDeleted(id=row.id, deleted=True)


@router.post("/{model_id}/retire", response_model=FineTunedModelPublic)
def retire_model(
    model_id: ModelId,
    session: SessionDep,
    authorized: Annotated[Authorized, authorize("model:{model_id}", "retire")],
) -> FineTunedModelPublic:
    return FineTunedModelPublic.model_validate(
        service.retire(session, authorized=authorized, model_id=model_id)
    )


# --- /v1/promotion_requests -------------------------------------------------------------


@promotions_router.get("", response_model=PromotionRequestsPage)
def list_promotion_requests(
    session: SessionDep,
    state: StateDep,
    authorized: Annotated[Authorized, authorize("model:*", "list")],
    model_id: Annotated[
        str | None, Query(max_length=128, pattern=r"^ft:[A-Za-z0-9._@:-]+$")
    ] = None,
    status: PromotionStatus | None = None,
    after: Annotated[str | None, Query(max_length=40, pattern=r"^[A-Za-z0-9._-]+$")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> PromotionRequestsPage:
    """The tenant's promotion requests whose model the caller may read, newest first;
    `?status=pending` is a compliance officer's queue."""
    rows, has_more = promotions.list_visible(
        session,
        state=state,
        authorized=authorized,
        model_id=model_id,
        status=status,
        after=after,
        limit=limit,
    )
    data = [PromotionRequestPublic.model_validate(row) for row in rows]
    return PromotionRequestsPage(
        data=data,
        has_more=has_more,
        first_id=data[0].id if data else None,
        last_id=data[-1].id if data else None,
    )


@promotions_router.get("/{request_id}", response_model=PromotionRequestPublic)
def get_promotion_request(
    request_id: RequestId,
    session: SessionDep,
    authorized: Annotated[
        Authorized, authorize("model:{model_id}", "read", resolve=promotions.model_of)
    ],
) -> PromotionRequestPublic:
    return PromotionRequestPublic.model_validate(
        promotions.get_visible(session, authorized=authorized, request_id=request_id)
    )


@promotions_router.post("/{request_id}/approve", response_model=PromotionRequestPublic)
def approve_promotion_request(
    request_id: RequestId,
    session: SessionDep,
    state: StateDep,
    authorized: Annotated[
        Authorized, authorize("model:{model_id}", "approve", resolve=promotions.model_of)
    ],
    body: Annotated[PromotionApprove | None, Body()] = None,
) -> PromotionRequestPublic:
    """A compliance officer who neither asked for the promotion nor trained the model
    approves it: the model goes to production in the same transaction."""
    return PromotionRequestPublic.model_validate(
        promotions.approve(
            session,
            state=state,
            authorized=authorized,
            request_id=request_id,
            reason=body.reason if body is not None else None,
        )
    )


@promotions_router.post("/{request_id}/reject", response_model=PromotionRequestPublic)
def reject_promotion_request(
    request_id: RequestId,
    body: PromotionReject,
    session: SessionDep,
    state: StateDep,
    authorized: Annotated[
        Authorized, authorize("model:{model_id}", "approve", resolve=promotions.model_of)
    ],
) -> PromotionRequestPublic:
    return PromotionRequestPublic.model_validate(
        promotions.reject(
            session,
            state=state,
            authorized=authorized,
            request_id=request_id,
            reason=body.reason,
        )
    )
