"""Models: the registry, a model's page (lineage graph, evaluation, dossier, promotion),
and promotion as request then approval (four eyes)."""

from __future__ import annotations

from typing import Annotated, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from gateway.authz import Authorized, allows
from gateway.console import models as views
from gateway.console.deps import FormDep, console_authorize
from gateway.console.forms import checked
from gateway.console.render import render
from gateway.deps import SessionDep, StateDep
from gateway.dossier import lineage
from gateway.dossier import service as dossier
from gateway.dossier.markdown import render_markdown
from gateway.registry import promotions, service
from gateway.registry.models import ModelVersion
from gateway.registry.schemas import (
    FineTunedModelPublic,
    PromotionReject,
    PromotionRequestCreate,
    PromotionRequestPublic,
)

router = APIRouter(prefix="/console")
Cursor = Annotated[str | None, Query(max_length=128, pattern=r"^[A-Za-z0-9._@:-]*$")]
PAGE = 50


@router.get("/models", response_class=HTMLResponse, include_in_schema=False)
def list_page(
    request: Request,
    session: SessionDep,
    state: StateDep,
    authorized: Annotated[Authorized, console_authorize("model:*", "list")],
    status: Annotated[str | None, Query(max_length=16)] = None,
    flagged: Annotated[str | None, Query(max_length=4)] = None,
    after: Cursor = None,
) -> HTMLResponse:
    only_flagged = status == "flagged" or flagged == "1"
    wanted = status if status in views.STATUSES else None
    rows, next_after = service.list_visible(
        session,
        state=state,
        authorized=authorized,
        status=wanted,
        flagged=True if only_flagged else None,
        after=after,
        limit=PAGE,
    )
    models = [
        FineTunedModelPublic.model_validate(row) for row in rows if isinstance(row, ModelVersion)
    ]
    query = {"status": "flagged" if only_flagged else wanted} if (only_flagged or wanted) else {}
    return render(
        request,
        "models.html",
        state=state,
        principal=authorized.principal,
        models=models,
        status="flagged" if only_flagged else (wanted or ""),
        next_href=f"/console/models?{urlencode({**query, 'after': next_after})}"
        if next_after
        else None,
    )


def _model_page(
    request, session, state, authorized, model_id, *, values=None, errors=None, status_code=200
) -> HTMLResponse:
    row = service.get_in_tenant(session, tenant=authorized.principal.tenant, model_id=model_id)
    requests, _ = promotions.list_visible(
        session,
        state=state,
        authorized=authorized,
        model_id=model_id,
        status=None,
        after=None,
        limit=20,
    )
    principal = authorized.principal
    obj = service.policy_object(model_id)
    public = [PromotionRequestPublic.model_validate(r) for r in requests]
    return render(
        request,
        "model.html",
        state=state,
        principal=principal,
        status_code=status_code,
        model=FineTunedModelPublic.model_validate(row),
        lineage_svg=views.lineage_graph(lineage.build_lineage(session, row=row)),
        evaluation_rows=views.evaluation_rows(row.evaluation),
        evaluation_svg=views.evaluation_chart(row.evaluation),
        requests=public,
        pending=any(r.status == "pending" for r in public),
        may_promote=allows(state.policy, principal, obj, "promote"),
        may_approve=allows(state.policy, principal, obj, "approve"),
        may_export=allows(state.policy, principal, obj, "export"),
        values=values or {},
        errors=errors or {},
    )


@router.get("/models/{model_id}", response_class=HTMLResponse, include_in_schema=False)
def model_page(
    request: Request,
    model_id: str,
    session: SessionDep,
    state: StateDep,
    authorized: Annotated[Authorized, console_authorize("model:{model_id}", "read")],
) -> HTMLResponse:
    return _model_page(request, session, state, authorized, model_id)


@router.get("/models/{model_id}/dossier.{fmt}", include_in_schema=False)
def dossier_download(
    model_id: str,
    fmt: Literal["md", "json"],
    session: SessionDep,
    state: StateDep,
    authorized: Annotated[Authorized, console_authorize("model:{model_id}", "export")],
) -> Response:
    built = dossier.build(session, state=state, authorized=authorized, model_id=model_id)
    name = model_id.replace(":", "_")
    if fmt == "md":
        body, media = render_markdown(built), "text/markdown; charset=utf-8"
    else:
        body, media = built.model_dump_json(indent=2), "application/json"
    return Response(
        body,
        media_type=media,
        headers={"Content-Disposition": f'attachment; filename="dossier-{name}.{fmt}"'},
    )


@router.post("/models/{model_id}/promotion_requests", include_in_schema=False)
def request_promotion(
    request: Request,
    model_id: str,
    form: FormDep,
    session: SessionDep,
    state: StateDep,
    authorized: Annotated[Authorized, console_authorize("model:{model_id}", "promote")],
) -> Response:
    values = {
        "reason": form.get("reason", ""),
        "override_reason": form.get("override_reason") or None,
    }
    body, errors = checked(PromotionRequestCreate, values)
    if body is None:
        return _model_page(
            request,
            session,
            state,
            authorized,
            model_id,
            values=values,
            errors=errors,
            status_code=422,
        )
    promotions.create(
        session,
        authorized=authorized,
        model_id=model_id,
        reason=body.reason,
        override_reason=body.override_reason,
    )
    return RedirectResponse(f"/console/models/{model_id}", status_code=303)


Decide = Annotated[
    Authorized, console_authorize("model:{model_id}", "approve", resolve=promotions.model_of)
]


@router.post("/promotion-requests/{request_id}/approve", include_in_schema=False)
def approve(
    request_id: str, _form: FormDep, session: SessionDep, state: StateDep, authorized: Decide
) -> Response:
    row = promotions.approve(
        session, state=state, authorized=authorized, request_id=request_id, reason=None
    )
    return RedirectResponse(f"/console/models/{row.model_id}", status_code=303)


@router.post("/promotion-requests/{request_id}/reject", include_in_schema=False)
def reject(
    request: Request,
    request_id: str,
    form: FormDep,
    session: SessionDep,
    state: StateDep,
    authorized: Decide,
) -> Response:
    body, errors = checked(PromotionReject, {"reason": form.get("reason", "")})
    if body is None:
        row = promotions.get_visible(session, authorized=authorized, request_id=request_id)
        return _model_page(
            request, session, state, authorized, row.model_id, errors=errors, status_code=422
        )
    row = promotions.reject(
        session, state=state, authorized=authorized, request_id=request_id, reason=body.reason
    )
    return RedirectResponse(f"/console/models/{row.model_id}", status_code=303)
