from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query
from fastapi.responses import FileResponse

from gateway.authz import Authorized
from gateway.deps import SessionDep, StateDep, UploadDep, authorize, authorize_upload
from gateway.files import service
from gateway.files.schemas import UPLOAD_FIELDS, FileDeleted, FilePublic, FilesPage

router = APIRouter(prefix="/v1/files", tags=["files"])

FileId = Annotated[str, Path(max_length=64)]


@router.post(
    "",
    response_model=FilePublic,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["purpose", "data_source", "file"],
                        "properties": {
                            "purpose": {"type": "string", "enum": ["fine-tune"]},
                            "data_source": {"type": "string"},
                            "file": {"type": "string", "format": "binary"},
                        },
                    }
                }
            },
        }
    },
)
async def upload_file(
    session: SessionDep,
    state: StateDep,
    upload: UploadDep,
    authorized: Annotated[
        Authorized, authorize_upload("ds:{data_source}", "upload", fields=UPLOAD_FIELDS)
    ],
) -> FilePublic:
    """Multipart, as OpenAI's `files.create` sends it, with `data_source` as an extra form
    field (`extra_body={"data_source": ...}` in the SDK). Send the fields before the file."""
    return FilePublic.model_validate(
        await service.upload(session, state=state, authorized=authorized, upload=upload)
    )


@router.get("", response_model=FilesPage)
def list_files(
    session: SessionDep,
    state: StateDep,
    authorized: Annotated[Authorized, authorize("ds:*", "list")],
    purpose: Annotated[str | None, Query(max_length=32, pattern=r"^[A-Za-z0-9._-]+$")] = None,
    data_source: Annotated[str | None, Query(max_length=64, pattern=r"^[A-Za-z0-9._-]+$")] = None,
    after: Annotated[str | None, Query(max_length=64, pattern=r"^[A-Za-z0-9._-]+$")] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 10_000,
    order: Literal["asc", "desc"] = "desc",
) -> FilesPage:
    rows, has_more = service.list_visible(
        session,
        state=state,
        authorized=authorized,
        purpose=purpose,
        data_source=data_source,
        after=after,
        limit=limit,
        order=order,
    )
    data = [FilePublic.model_validate(row) for row in rows]
    return FilesPage(
        data=data,
        has_more=has_more,
        first_id=data[0].id if data else None,
        last_id=data[-1].id if data else None,
    )


@router.get("/{file_id}", response_model=FilePublic)
def get_file(
    file_id: FileId,
    session: SessionDep,
    authorized: Annotated[Authorized, authorize("{governor}", "read", resolve=service.governor_of)],
) -> FilePublic:
    return FilePublic.model_validate(
        service.get_visible(session, authorized=authorized, file_id=file_id)
    )


@router.get(
    "/{file_id}/content",
    response_class=FileResponse,
    responses={200: {"content": {"application/octet-stream": {}}}},
)
def get_file_content(
    file_id: FileId,
    session: SessionDep,
    state: StateDep,
    authorized: Annotated[Authorized, authorize("{governor}", "read", resolve=service.governor_of)],
) -> FileResponse:
    """The file's bytes; a job's result file (purpose `fine-tune-results`) for whoever may
    read the job, any other for whoever may read its data source."""
    row, path = service.open_content(session, state=state, authorized=authorized, file_id=file_id)
    return FileResponse(path, media_type="application/octet-stream", filename=row.filename)


@router.delete("/{file_id}", response_model=FileDeleted)
def delete_file(
    file_id: FileId,
    session: SessionDep,
    state: StateDep,
    authorized: Annotated[
        Authorized, authorize("ds:{data_source}", "upload", resolve=service.data_source_of)
    ],
) -> FileDeleted:
    """OpenAI's files.delete, for whoever may upload to the file's data source: the content
    goes and the file can no longer be trained on; its hashes, datasheet and lineage stay.
    409 while a job that has not finished uses it. Not erasure (see /v1/erasure_requests)."""
    row = service.delete(session, state=state, authorized=authorized, file_id=file_id)
    return FileDeleted(id=row.id, deleted=True)
