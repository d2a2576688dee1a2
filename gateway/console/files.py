"""A file version's datasheet for the console: what the upload's report recorded (counts and
line numbers, never an example's text or a PII value) and the gates a job on it would pass,
each decided by the job submission's own gate functions."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlmodel import Session

from gateway.authz import Authorized
from gateway.data_sources import service as data_sources
from gateway.data_sources.models import DataSource
from gateway.files import service as files
from gateway.files.models import TrainingFile
from gateway.files.schemas import FilePublic
from gateway.jobs import gates
from gateway.jobs.gates import Outcome
from gateway.runtime import Runtime
from ingest.dedup import FingerprintError, fingerprint_path

OVERLAP_WITH = 5  # the source's most recent other file versions compared with this one


@dataclass(frozen=True)
class Gate:
    gate: str
    passed: bool
    message: str
    code: str | None = None


@dataclass(frozen=True)
class Overlap:
    file_id: str
    filename: str
    overlapping_lines: int | None
    passed: bool | None
    message: str


def _gate(outcome: Outcome, passed_message: str) -> Gate:
    if outcome.refusal is None:
        return Gate(outcome.gate, True, passed_message)
    return Gate(outcome.gate, False, outcome.refusal.message, outcome.refusal.code)


def _stored(state: Runtime, row: TrainingFile) -> bool:
    path = files.stored_content(state.settings, row)
    return row.deleted_at is None and path is not None and path.is_file()


def gate_outcomes(state: Runtime, row: TrainingFile, source: DataSource) -> list[Gate]:
    """The upload's own checks, then every gate of a job submission that depends on this
    file alone (train/validation overlap depends on the pair: see `overlaps`)."""
    report = row.report or {}
    faults = int((report.get("faults") or {}).get("count") or 0)
    upload = Gate(
        "upload",
        row.status == "processed",
        "format, size and personal-data checks passed"
        if row.status == "processed"
        else (row.status_details or f"{faults} faults found"),
    )
    return [
        upload,
        _gate(
            gates.file_usable(row.id, status=row.status, stored=_stored(state, row), param=None),
            "processed, and its content is stored",
        ),
        _gate(
            gates.file_for_training(row.id, purpose=row.purpose, param=None),
            f"uploaded for {row.purpose}",
        ),
        _gate(
            gates.source_approved(source.id, status=source.status),
            f"data source {source.id} is approved",
        ),
        _gate(
            gates.enough_examples(row.examples, minimum=source.min_examples),
            f"{row.examples} examples (the source requires {source.min_examples})",
        ),
        *(
            []
            if source.max_conflict_rate is None  # a gate only where the source sets one
            else [
                _gate(
                    gates.conflict_rate(row.id, datasheet=report, maximum=source.max_conflict_rate),
                    f"conflicting answers within {source.max_conflict_rate:.2%}",
                )
            ]
        ),
    ]


def overlaps(
    session: Session, *, state: Runtime, authorized: Authorized, row: TrainingFile
) -> list[Overlap]:
    """This file as validation file against the source's recent other versions as training
    file, through the submission's overlap gate (the fingerprints written at upload)."""
    mine = files.stored_content(state.settings, row)
    if mine is None or not fingerprint_path(mine).is_file():
        return []
    others, _ = files.list_visible(
        session,
        state=state,
        authorized=authorized,
        purpose=None,
        data_source=row.data_source_id,
        after=None,
        limit=OVERLAP_WITH + 1,
        order="desc",
    )
    found = []
    for other in [each for each in others if each.id != row.id][:OVERLAP_WITH]:
        theirs = files.stored_content(state.settings, other)
        if theirs is None or not fingerprint_path(theirs).is_file():
            found.append(Overlap(other.id, other.filename, None, None, "content not stored"))
            continue
        try:
            outcome = gates.no_overlap(fingerprint_path(theirs), fingerprint_path(mine))
        except (FingerprintError, OSError):
            found.append(Overlap(other.id, other.filename, None, None, "fingerprint unreadable"))
            continue
        lines = outcome.figures.get("overlapping_lines")
        if outcome.refusal is not None:
            lines = (outcome.refusal.details or {}).get("overlapping_lines")
        found.append(
            Overlap(
                other.id,
                other.filename,
                lines,
                outcome.passed,
                "passes" if outcome.passed else outcome.refusal.message,  # type: ignore[union-attr]
            )
        )
    return found


def pii_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per kind of personal data: findings, lines, the line numbers kept."""
    pii = report.get("pii") or {}
    return [
        {
            "type": kind,
            "findings": entry.get("findings", 0),
            "lines": entry.get("lines", 0),
            "line_numbers": entry.get("line_numbers") or [],
            "more": max(0, entry.get("lines", 0) - len(entry.get("line_numbers") or [])),
        }
        for kind, entry in sorted((pii.get("by_type") or {}).items())
    ]


def datasheet(
    session: Session, *, state: Runtime, authorized: Authorized, file_id: str
) -> dict[str, Any]:
    """The datasheet page's context: the file (as the API returns it), its source's name,
    its report, its PII rows, its gates and its overlaps."""
    row = files.get_visible(session, authorized=authorized, file_id=file_id)
    source = data_sources.get_visible(
        session, authorized=authorized, data_source_id=row.data_source_id
    )
    report = row.report or {}
    return {
        "file": FilePublic.model_validate(row),
        "uploaded_at": _when(row.created_at),
        "deleted_at": _when(row.deleted_at),
        "source_name": source.name,
        "report": report,
        "pii": pii_rows(report),
        "gates": gate_outcomes(state, row, source),
        "overlaps": overlaps(session, state=state, authorized=authorized, row=row),
    }


def _when(seconds: int | None) -> str | None:
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
