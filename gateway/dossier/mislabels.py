"""The dossier's suspected-mislabels section: the training lines the job's tuned model
disagreed with and their reviews, the lines this version was trained without (and the job
whose reviews confirmed them wrong), and what the cleaning was worth on the held-out set.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict
from sqlmodel import Session

from gateway.jobs import mislabels
from gateway.jobs.models import FineTuningJob

ALWAYS_WRITTEN = ConfigDict(json_schema_serialization_defaults_required=True)


class DossierSuspect(BaseModel):
    """A flagged training line, its label and the model's answer, and its review."""

    model_config = ALWAYS_WRITTEN

    id: str
    file_id: str
    line: int
    score: float
    reason: str
    field: str | None
    label: str
    model_answer: str | None
    review_status: str
    reviewed_by: str | None


class DossierMislabelFigures(BaseModel):
    """What scoring the training set under the tuned adapter cost and found."""

    model_config = ALWAYS_WRITTEN

    examples_scored: int
    tokens_scored: int
    target_tokens_scored: int
    scoring_seconds: float
    structured_candidates: int
    generation_seconds: float
    seconds: float
    flagged: int
    cleared_by_agreement: int = 0
    by_reason: dict[str, int]
    z_threshold: float
    candidate_z: float
    median_loss: float | None


class DossierExcludedLines(BaseModel):
    """Lines of the training file left out, confirmed wrong in the review of ``from_job``."""

    model_config = ALWAYS_WRITTEN

    from_job: str
    lines: list[int]


class DossierCleaningScores(BaseModel):
    """The tuned model's held-out scores (the evaluation's ``tuned`` system)."""

    model_config = ALWAYS_WRITTEN

    exact_match: float | None = None
    token_f1: float | None = None
    loss: float | None = None


class DossierCleaning(BaseModel):
    """Held-out scores of the tuned model with and without the confirmed-wrong lines."""

    model_config = ALWAYS_WRITTEN

    compares: str
    source_job: str
    source_model: str | None
    excluded_lines: list[int]
    same_held_out: bool
    with_confirmed_wrong: DossierCleaningScores
    without_confirmed_wrong: DossierCleaningScores


class DossierMislabels(BaseModel):
    """``figures``: what scoring the training set cost and found (None: not scored);
    ``excluded``: the lines left out of training and the job that confirmed them wrong;
    ``cleaning``: held-out scores with and without those lines (see its ``compares``)."""

    model_config = ALWAYS_WRITTEN

    figures: DossierMislabelFigures | None
    flagged: list[DossierSuspect]
    excluded: DossierExcludedLines | None
    cleaning: DossierCleaning | None


def section(
    session: Session, *, job: FineTuningJob | None, evaluation: dict[str, Any] | None
) -> DossierMislabels:
    if job is None:
        return DossierMislabels(figures=None, flagged=[], excluded=None, cleaning=None)
    spec = job.spec or {}
    excluded = None
    if spec.get("exclude_lines_from"):
        excluded = DossierExcludedLines(
            from_job=spec["exclude_lines_from"], lines=list(spec.get("exclude_lines") or [])
        )
    figures = (job.compute or {}).get("suspected_mislabels")
    cleaning = (evaluation or {}).get("cleaning")
    return DossierMislabels(
        figures=DossierMislabelFigures.model_validate(figures) if figures else None,
        flagged=[
            DossierSuspect(
                id=row.id,
                file_id=row.file_id,
                line=row.line,
                score=row.score,
                reason=row.reason,
                field=row.field,
                label=row.label,
                model_answer=row.model_answer,
                review_status=row.review_status,
                reviewed_by=row.reviewed_by,
            )
            for row in mislabels.all_of(session, job_id=job.id)
        ],
        excluded=excluded,
        cleaning=DossierCleaning.model_validate(cleaning) if cleaning else None,
    )


def render(section: DossierMislabels | None, table: Any) -> list[str]:
    """Markdown lines; ``table`` is the dossier's table renderer."""
    if section is None:
        return []
    lines = ["## 12. Suspected mislabels", ""]
    if section.figures is None:
        lines += ["The training set was not scored for suspected mislabels.", ""]
    else:
        figures = section.figures
        lines += [
            f"{figures.examples_scored} training examples scored under the tuned "
            f"adapter ({figures.tokens_scored} tokens, {figures.seconds} s); "
            f"{figures.flagged} flagged at robust z > {figures.z_threshold}.",
            "",
            *table(
                ["line", "file", "score", "reason", "field", "review", "label", "model answer"],
                (
                    [
                        s.line,
                        s.file_id,
                        f"{s.score:.2f}",
                        s.reason,
                        s.field,
                        s.review_status,
                        s.label,
                        s.model_answer,
                    ]
                    for s in section.flagged
                ),
            ),
        ]
    if section.excluded is not None:
        lines += [
            f"Trained without lines {section.excluded.lines} of the training file, "
            f"confirmed wrong in the review of job {section.excluded.from_job}.",
            "",
        ]
    if section.cleaning is not None:
        cleaning = section.cleaning
        lines += [
            f"Compared: {cleaning.compares}.",
            "",
            *table(
                ["metric", "with confirmed-wrong lines (source job)", "without (this model)"],
                (
                    [
                        name,
                        getattr(cleaning.with_confirmed_wrong, name),
                        getattr(cleaning.without_confirmed_wrong, name),
                    ]
                    for name in mislabels.COMPARED_METRICS
                ),
            ),
        ]
    return lines
