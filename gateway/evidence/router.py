"""GET /v1/models/{id}/evidence: the model version's evidence bundle, streamed as a zip."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path
from fastapi.responses import StreamingResponse
from starlette.background import BackgroundTask

from gateway.authz import Authorized
from gateway.deps import SessionDep, StateDep, authorize
from gateway.evidence import service

router = APIRouter(prefix="/v1/models", tags=["models"])

ModelId = Annotated[str, Path(max_length=128)]


@router.get(
    "/{model_id}/evidence",
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {"application/zip": {}},
            "description": "the evidence bundle (check it: `tunegate evidence verify`)",
        },
        401: {"description": "no or a bad token"},
        403: {"description": "the policy refuses exporting this model"},
        404: {"description": "no such model in the caller's tenant, or an empty audit trail"},
    },
)
def get_model_evidence(
    model_id: ModelId,
    session: SessionDep,
    state: StateDep,
    authorized: Annotated[Authorized, authorize("model:{model_id}", "export")],
) -> StreamingResponse:
    evidence = service.export(session, state=state, authorized=authorized, model_id=model_id)
    return StreamingResponse(
        evidence.chunks(),
        media_type="application/zip",
        headers={
            "content-disposition": f'attachment; filename="{evidence.filename}"',
            "content-length": str(evidence.size),
            "x-evidence-sha256": evidence.sha256,
        },
        background=BackgroundTask(evidence.file.close),  # also when the client went away
    )
