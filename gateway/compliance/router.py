"""The regulators' documents: a model version's Art. 53(1)(d) training-content summary
(beside its dossier under /v1/models) and the tenant's GDPR Art. 30 records."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Header, Path
from fastapi.responses import Response

from gateway.authz import Authorized
from gateway.compliance import markdown, service
from gateway.compliance.schemas import RecordsOfProcessing, TrainingContentSummary
from gateway.deps import SessionDep, StateDep, authorize

router = APIRouter(tags=["compliance"])

ModelId = Annotated[str, Path(max_length=128)]
MARKDOWN = "text/markdown; charset=utf-8"


def _wants(format: str | None, accept: str | None, media: str) -> bool:
    return format is None and accept is not None and media in accept


@router.get(
    "/v1/models/{model_id}/training_content_summary",
    response_model=TrainingContentSummary,
    responses={200: {"content": {"text/markdown": {}}}},
)
def get_training_content_summary(
    model_id: ModelId,
    session: SessionDep,
    state: StateDep,
    authorized: Annotated[Authorized, authorize("model:{model_id}", "read")],
    format: Literal["json", "markdown"] | None = None,
    accept: Annotated[str | None, Header(max_length=1024)] = None,
) -> TrainingContentSummary | Response:
    summary = service.training_content_summary(
        session, state=state, authorized=authorized, model_id=model_id
    )
    if format == "markdown" or _wants(format, accept, "text/markdown"):
        return Response(markdown.render_summary(summary), media_type=MARKDOWN)
    return summary


@router.get(
    "/v1/compliance/records_of_processing",
    response_model=RecordsOfProcessing,
    responses={200: {"content": {"text/markdown": {}, "text/csv": {}}}},
)
def get_records_of_processing(
    session: SessionDep,
    state: StateDep,
    authorized: Annotated[Authorized, authorize("compliance", "read")],
    format: Literal["json", "csv", "markdown"] | None = None,
    accept: Annotated[str | None, Header(max_length=1024)] = None,
) -> RecordsOfProcessing | Response:
    records = service.records_of_processing(session, state=state, authorized=authorized)
    if format == "csv" or _wants(format, accept, "text/csv"):
        return Response(
            markdown.records_csv(records),
            media_type="text/csv; charset=utf-8",
            headers={"content-disposition": 'attachment; filename="records_of_processing.csv"'},
        )
    if format == "markdown" or _wants(format, accept, "text/markdown"):
        return Response(markdown.render_records(records), media_type=MARKDOWN)
    return records
