"""`POST /v1/chat/completions` (OpenAI's, governed) and the model's inference views:
usage, traffic, the traffic split (canary) and text retention."""

from __future__ import annotations

from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Depends, Header, Path, Query, Request
from fastapi.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from gateway.authz import Authorized
from gateway.deps import (
    PATH_ID,
    Authorize,
    PrincipalDep,
    SessionDep,
    StateDep,
    authorize,
)
from gateway.inference import canary, service, transcripts, usage
from gateway.inference.schemas import (
    ChatCompletion,
    ChatCompletionCreate,
    GroupBy,
    InferenceSettingsPublic,
    ModelTraffic,
    ModelUsage,
    TextRetentionSet,
    TrafficSplitPublic,
    TrafficSplitSet,
)
from gateway.registry.service import get_visible, kind_of

router = APIRouter(tags=["inference"])

ModelId = Annotated[str, Path(max_length=128)]
INFER = "infer"


class AuthorizeChat(Authorize):
    """`infer` on the model the body names (`model:<id>` for a fine-tuned id, else
    `base:<name>`), decided before the body is validated, so a caller without the grant
    learns nothing about the request or the model. A body naming no usable model is
    decided on the collection (`model:*`)."""

    def __init__(self) -> None:
        super().__init__("{kind}:{model}", INFER)

    def __repr__(self) -> str:
        return "AuthorizeChat('{kind}:{model}', 'infer')"

    async def __call__(
        self, request: Request, principal: PrincipalDep, state: StateDep
    ) -> Authorized:
        values = {"kind": "model", "model": "*"}
        try:
            # the JSON FastAPI already parsed for the body (starlette keeps it): not twice
            named = (await request.json()).get("model")
        except (ValueError, AttributeError, UnicodeDecodeError):
            named = None
        if isinstance(named, str) and PATH_ID.fullmatch(named):
            values = {"kind": "model" if named.startswith("ft:") else "base", "model": named}
        return await self.decide(request, principal, state, values)


class _SSEResponse(StreamingResponse):
    """Closes its stream whatever ends the response (a client gone included), which
    stops the generation and records the call."""

    def __init__(self, stream: service.SSEStream) -> None:
        super().__init__(
            stream,
            media_type=stream.media_type,
            headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
        )
        self.stream = stream

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            with anyio.CancelScope(shield=True):
                await self.stream.aclose()


@router.post(
    "/v1/chat/completions",
    response_model=ChatCompletion,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def create_chat_completion(
    request: Request,
    body: ChatCompletionCreate,
    state: StateDep,  # resolved once per request, for AuthorizeChat too
    authorized: Annotated[Authorized, Depends(AuthorizeChat())],
    x_tunegate_purpose: Annotated[str | None, Header(max_length=64)] = None,
) -> Any:
    """OpenAI's chat completion, streamed (SSE, ending with `data: [DONE]`) or not, from
    a fine-tuned model, a checkpoint or a registered base model the caller may `infer`
    with, for a purpose (`purpose` / `metadata.purpose` / `X-Tunegate-Purpose`; default:
    the model's training purpose)."""
    outcome = await service.complete(
        state.inference_runtime(),
        authorized=authorized,
        body=body,
        raw_body=await request.body(),
        request_id=str(getattr(request.state, "request_id", "") or ""),
        header_purpose=x_tunegate_purpose,
    )
    if isinstance(outcome, service.SSEStream):
        return _SSEResponse(outcome)
    return Response(
        content=outcome.body,
        status_code=outcome.status_code,
        headers=outcome.headers,
        media_type=outcome.media_type,
    )


@router.get("/v1/models/{model_id}/usage", response_model=ModelUsage)
def get_model_usage(
    model_id: ModelId,
    session: SessionDep,
    authorized: Annotated[Authorized, authorize("{kind}:{model_id}", "read", resolve=kind_of)],
    since: Annotated[int | None, Query(ge=0, description="unix seconds, inclusive")] = None,
    until: Annotated[int | None, Query(ge=0, description="unix seconds, exclusive")] = None,
    group_by: GroupBy | None = None,
) -> ModelUsage:
    """Calls this version served (after any traffic split): calls, tokens and errors, in
    total and per user, purpose or UTC day."""
    get_visible(session, authorized=authorized, model_id=model_id)  # 404 in another tenant
    return usage.model_usage(
        session,
        tenant=authorized.principal.tenant,
        model_id=model_id,
        since=since,
        until=until,
        group_by=group_by,
    )


@router.get("/v1/models/{model_id}/traffic", response_model=ModelTraffic)
def get_model_traffic(
    model_id: ModelId,
    session: SessionDep,
    authorized: Annotated[Authorized, authorize("{kind}:{model_id}", "read", resolve=kind_of)],
) -> ModelTraffic:
    """Of the calls naming this model, the last hour and day: the share each version
    served, with its errors and error rate, the production version and the canary side by
    side."""
    get_visible(session, authorized=authorized, model_id=model_id)
    tenant = authorized.principal.tenant
    split = canary.get_split(session, tenant=tenant, model_id=model_id)
    return ModelTraffic(
        model_id=model_id,
        split=TrafficSplitPublic.model_validate(split) if split is not None else None,
        versions=usage.version_traffic(
            session,
            tenant=tenant,
            model_id=model_id,
            candidate_id=split.candidate_id if split is not None else None,
        ),
    )


@router.post("/v1/models/{model_id}/traffic_split", response_model=TrafficSplitPublic)
def set_traffic_split(
    model_id: ModelId,
    body: TrafficSplitSet,
    session: SessionDep,
    authorized: Annotated[Authorized, authorize("model:{model_id}", "route")],
) -> TrafficSplitPublic:
    """An admin sends `percent` % of the calls naming this production model to a candidate
    of the same base model (a canary); `percent` 0 or no candidate ends it. Audited."""
    return TrafficSplitPublic.model_validate(
        canary.set_split(session, authorized=authorized, model_id=model_id, body=body)
    )


@router.post("/v1/models/{model_id}/text_retention", response_model=InferenceSettingsPublic)
def set_text_retention(
    model_id: ModelId,
    body: TextRetentionSet,
    session: SessionDep,
    state: StateDep,
    authorized: Annotated[Authorized, authorize("model:{model_id}", "approve")],
) -> InferenceSettingsPublic:
    """A compliance officer turns on (or off) keeping the full prompt and completion of
    this model's calls, for `retention_days`; erasure requests reach what is kept."""
    return InferenceSettingsPublic.model_validate(
        transcripts.set_text_retention(
            session, state=state, authorized=authorized, model_id=model_id, body=body
        )
    )
