"""A model version's lineage and its technical dossier (the compliance documents), beside
the registry's own routes under /v1/models."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path
from fastapi.responses import Response

from gateway.authz import Authorized
from gateway.deps import SessionDep, StateDep, authorize
from gateway.dossier import lineage, service
from gateway.dossier.markdown import render_markdown
from gateway.dossier.schemas import DossierPublic, LineagePublic

router = APIRouter(prefix="/v1/models", tags=["models"])

ModelId = Annotated[str, Path(max_length=128)]


@router.get("/{model_id}/lineage", response_model=LineagePublic)
def get_model_lineage(
    model_id: ModelId,
    session: SessionDep,
    authorized: Annotated[Authorized, authorize("model:{model_id}", "read")],
) -> LineagePublic:
    return lineage.lineage(session, authorized=authorized, model_id=model_id)


@router.get(
    "/{model_id}/dossier",
    response_model=DossierPublic,
    responses={200: {"content": {"text/markdown": {}}}},
)
def get_model_dossier(
    model_id: ModelId,
    session: SessionDep,
    state: StateDep,
    authorized: Annotated[Authorized, authorize("model:{model_id}", "export")],
    format: Literal["json", "markdown"] = "json",
) -> DossierPublic | Response:
    dossier = service.build(session, state=state, authorized=authorized, model_id=model_id)
    if format == "markdown":
        return Response(render_markdown(dossier), media_type="text/markdown; charset=utf-8")
    return dossier
