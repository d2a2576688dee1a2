"""A job's result file (OpenAI's ``result_files``): the metrics CSV a job that succeeded
leaves, stored as a file of purpose ``fine-tune-results`` and read as any file is, through
``/v1/files/{id}/content``. It is governed by its job, not by a data source: whoever may
read the job may read it (gateway.files.service.governor_of). Never commits."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import Final

from sqlmodel import Session

from gateway.config import Settings
from gateway.files.models import TrainingFile
from gateway.files.schemas import RESULTS_PURPOSE
from gateway.files.service import new_file_id, source_dir
from ingest import content_path

RESULTS_FILENAME: Final = "step_metrics.csv"


def record_result_file(
    session: Session,
    *,
    settings: Settings,
    training: TrainingFile,
    job_id: str,
    created_by: str,
    content: bytes,
    rows: int,
) -> TrainingFile:
    """Store ``content`` beside the training file's (content-addressed, in its data
    source's directory, so the lineage and the erasure paths see it) and add its row."""
    sha256 = hashlib.sha256(content).hexdigest()
    directory = source_dir(settings, tenant=training.tenant, data_source_id=training.data_source_id)
    _write(content_path(directory, sha256), content)
    row = TrainingFile(
        id=new_file_id(),
        tenant=training.tenant,
        data_source_id=training.data_source_id,
        purpose=RESULTS_PURPOSE,
        filename=RESULTS_FILENAME,
        bytes=len(content),
        sha256=sha256,
        status="processed",
        pii_action=training.pii_action,
        report={"job_id": job_id, "format": "csv", "rows": rows},
        content_sha256=sha256,
        content_bytes=len(content),
        examples=0,
        created_at=int(time.time()),
        created_by=created_by,
    )
    session.add(row)
    return row


def _write(path: Path, content: bytes) -> None:
    if path.is_file():
        return  # the same bytes are already stored
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    partial.write_bytes(content)
    partial.replace(path)
