"""Suspected mislabels of a finished job: stored with its completion, listed, reviewed by a
data owner, and excluded from a later job on the same file. Never commits.

A job's run scores every training example under the tuned adapter (trainer.mislabels); the
flagged lines arrive with the TrainResult and are inserted in the transaction that
registers the model (gateway.executors.completion). The label is the user's own training
data, already stored in the file: it is kept here and returned to readers of the job, and
never logged nor put in an audit event.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

import structlog
from sqlalchemy import BigInteger, Column, Float, ForeignKey, Index, Integer, String, Text
from sqlmodel import Field, Session, SQLModel, col, select

from gateway.audit_api.service import record_allowed
from gateway.authz import Authorized
from gateway.db import read_only
from gateway.errors import InvalidRequest, NotFound
from gateway.files.models import TrainingFile
from gateway.jobs.models import FineTuningJob
from gateway.pagination import visible_page
from gateway.runtime import Runtime
from gateway.security import Principal

log = structlog.get_logger(__name__)

UNREVIEWED, REVIEWED_CORRECT, CONFIRMED_WRONG = "unreviewed", "reviewed_correct", "confirmed_wrong"
REVIEW_STATUSES = (UNREVIEWED, REVIEWED_CORRECT, CONFIRMED_WRONG)
# What the evaluation comparison of a job trained with exclude_lines_from says it compares.
COMPARISON_MEANING = (
    "held-out scores of the tuned model trained without the confirmed-wrong lines (this "
    "job) beside those of the tuned model trained with them (the source job); same "
    "held-out set when both used the same validation file, or the same seed's split"
)
COMPARED_METRICS = ("exact_match", "token_f1", "loss")


class SuspectedMislabel(SQLModel, table=True):
    __tablename__ = "job_suspected_mislabels"
    __table_args__ = (Index("ix_job_suspected_mislabels_job_line", "job_id", "line", "id"),)

    id: str = Field(sa_column=Column(String(40), primary_key=True))
    job_id: str = Field(
        sa_column=Column(String(32), ForeignKey("fine_tuning_jobs.id"), nullable=False)
    )
    tenant: str = Field(sa_column=Column(String(64), nullable=False))
    file_id: str = Field(sa_column=Column(String(40), nullable=False))
    line: int = Field(sa_column=Column(Integer, nullable=False))
    score: float = Field(sa_column=Column(Float, nullable=False))  # robust z of the loss
    loss: float = Field(sa_column=Column(Float, nullable=False))
    reason: str = Field(sa_column=Column(String(40), nullable=False))
    field: str | None = Field(default=None, sa_column=Column(String(128), nullable=True))
    label: str = Field(sa_column=Column(Text, nullable=False))
    model_answer: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    review_status: str = Field(sa_column=Column(String(24), nullable=False))
    reviewed_by: str | None = Field(default=None, sa_column=Column(String(128), nullable=True))
    reviewed_at: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    review_reason: str | None = Field(default=None, sa_column=Column(Text, nullable=True))


def new_id() -> str:
    return f"sml-{secrets.token_hex(8)}"


# --- with the job's completion ---------------------------------------------------------------


def record_suspects(session: Session, *, job: FineTuningJob, report: dict[str, Any] | None) -> int:
    """The run's flagged lines as rows of the job; returns how many."""
    if not report:
        return 0
    rows = [
        SuspectedMislabel(
            id=new_id(),
            job_id=job.id,
            tenant=job.tenant,
            file_id=job.training_file,
            line=int(entry["line_number"]),
            score=float(entry["score"]),
            loss=float(entry["loss"]),
            reason=str(entry["reason"]),
            field=entry.get("field"),
            label=str(entry["label"]),
            model_answer=entry.get("model_answer"),
            review_status=UNREVIEWED,
        )
        for entry in report.get("flagged", [])
    ]
    session.add_all(rows)
    return len(rows)


def figures_of(report: dict[str, Any] | None) -> dict[str, Any] | None:
    """What the scoring cost and found, for the job's compute figures."""
    return dict(report["figures"]) if report else None


def cleaning_comparison(
    session: Session, *, job: FineTuningJob, evaluation: dict[str, Any] | None
) -> dict[str, Any] | None:
    """For a job trained with exclude_lines_from: its tuned model's held-out scores
    ("without" the confirmed-wrong lines) beside the source job's ("with" them)."""
    source_id = (job.spec or {}).get("exclude_lines_from")
    if not source_id or not evaluation or "systems" not in evaluation:
        return None
    source = session.get(FineTuningJob, source_id)
    version = _model_of(session, source)
    before = (version.evaluation or {}) if version is not None else {}
    tuned_before = (before.get("systems") or {}).get("tuned") or {}
    tuned_after = evaluation["systems"].get("tuned") or {}
    return {
        "compares": COMPARISON_MEANING,
        "source_job": source_id,
        "source_model": version.id if version is not None else None,
        "excluded_lines": list((job.spec or {}).get("exclude_lines") or []),
        "same_held_out": _same_held_out(source, job),
        "with_confirmed_wrong": {k: tuned_before.get(k) for k in COMPARED_METRICS},
        "without_confirmed_wrong": {k: tuned_after.get(k) for k in COMPARED_METRICS},
    }


def _model_of(session: Session, job: FineTuningJob | None) -> Any:
    from gateway.registry.models import ModelVersion

    if job is None or job.fine_tuned_model is None:
        return None
    return session.get(ModelVersion, job.fine_tuned_model)


def _same_held_out(source: FineTuningJob | None, job: FineTuningJob) -> bool:
    if source is None:
        return False
    if job.validation_file or source.validation_file:
        return job.validation_file == source.validation_file
    return source.seed == job.seed and (source.evaluation or {}).get("held_out_fraction") == (
        job.evaluation or {}
    ).get("held_out_fraction")


# --- reading ---------------------------------------------------------------------------------


def list_page(
    session: Session, *, job: FineTuningJob, after: str | None, limit: int
) -> tuple[list[SuspectedMislabel], bool]:
    """The job's suspected lines in line order, a keyset page at a time."""
    cursor = None
    if after is not None:
        anchor = session.get(SuspectedMislabel, after)
        if anchor is None or anchor.job_id != job.id:
            raise InvalidRequest(
                "not a suspected mislabel of this job", code="invalid_cursor", param="after"
            )
        cursor = (anchor.line, anchor.id)
    query = select(SuspectedMislabel).where(col(SuspectedMislabel.job_id) == job.id)
    return visible_page(
        session,
        query,
        keys=[col(SuspectedMislabel.line), col(SuspectedMislabel.id)],
        after=cursor,
        visible=lambda row: True,  # the job's readers see all of its lines
        limit=limit,
    )


def all_of(session: Session, *, job_id: str) -> list[SuspectedMislabel]:
    return list(
        session.exec(
            select(SuspectedMislabel)
            .where(col(SuspectedMislabel.job_id) == job_id)
            .order_by(col(SuspectedMislabel.line), col(SuspectedMislabel.id))
        ).all()
    )


# --- review ----------------------------------------------------------------------------------


def data_source_of(state: Runtime, principal: Principal, values: dict[str, str]) -> dict[str, str]:
    """The authorization resolver of a review: a flagged line is governed by its file's
    data source. A line that does not exist (or is another tenant's, or not the job's)
    resolves to the collection, so a caller without grants learns nothing."""
    source_id = None
    with Session(read_only(state.engine)) as session:
        row = session.get(SuspectedMislabel, values.get("line_id", ""))
        if (
            row is not None
            and row.tenant == principal.tenant
            and row.job_id == values.get("job_id")
        ):
            file = session.get(TrainingFile, row.file_id)
            source_id = file.data_source_id if file is not None else None
    return {"data_source": source_id or "*"}


def review(
    session: Session,
    *,
    authorized: Authorized,
    job_id: str,
    line_id: str,
    verdict: str,
    reason: str,
) -> SuspectedMislabel:
    """A data owner's verdict on a flagged line, audited (without the line's text)."""
    principal = authorized.principal
    row = session.get(SuspectedMislabel, line_id, with_for_update=True)
    if row is None or row.tenant != principal.tenant or row.job_id != job_id:
        raise NotFound(
            f"suspected mislabel {line_id!r} of job {job_id!r} not found",
            code="suspected_mislabel_not_found",
        )
    previous = row.review_status
    row.review_status = verdict
    row.reviewed_by = principal.sub
    row.reviewed_at = int(time.time())
    row.review_reason = reason
    session.add(row)
    record_allowed(
        session,
        authorized=authorized,
        action="mislabel.reviewed",
        resource=f"job:{job_id}",
        details={
            "job_id": job_id,
            "line_id": row.id,
            "file_id": row.file_id,
            "line": row.line,
            "verdict": verdict,
            "previous": previous,
        },
    )
    log.info("mislabel.reviewed", job_id=job_id, line_id=row.id, verdict=verdict)
    return row


# --- exclusion in a later job ----------------------------------------------------------------


def confirmed_wrong_lines(
    session: Session, *, tenant: str, source_job_id: str, training_file: str
) -> list[int]:
    """The lines of ``source_job_id`` a data owner confirmed wrong, for a job on the same
    training file: 404 for a job not in the tenant, 400 for one on another file."""
    source = session.get(FineTuningJob, source_job_id)
    if source is None or source.tenant != tenant:
        raise NotFound(
            f"fine-tuning job {source_job_id!r} not found",
            code="job_not_found",
            param="exclude_lines_from",
        )
    if source.training_file != training_file:
        raise InvalidRequest(
            f"job {source_job_id} trained on {source.training_file}, not on {training_file}: "
            "its reviewed lines name lines of another file",
            code="exclusion_file_mismatch",
            param="exclude_lines_from",
        )
    lines = session.exec(
        select(col(SuspectedMislabel.line)).where(
            col(SuspectedMislabel.job_id) == source.id,
            col(SuspectedMislabel.review_status) == CONFIRMED_WRONG,
        )
    ).all()
    return sorted(set(lines))
