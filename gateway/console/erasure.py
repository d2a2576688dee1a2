"""The erasure pages' forms (the API's `ErasureRequestCreate` and `ErasureDecide`, filled
from form fields) and the search's progress as the request records it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway.erasure.schemas import ErasureDecision, ErasureRequestPublic

DECISIONS = [
    (ErasureDecision.delete_data.value, "delete the data (erase the matching files' content)"),
    (ErasureDecision.retrain.value, "retrain without it"),
    (ErasureDecision.accept.value, "accept without erasing (needs a reason)"),
]
STATUSES = ("searching", "open", "decided")


def request_body(form: Mapping[str, Any]) -> dict[str, Any]:
    """Form fields as the API's JSON body would carry them (the schema judges them)."""
    return {"subject": form.get("subject", ""), "reference": form.get("reference") or None}


def decide_body(form: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "decision": form.get("decision", ""),
        "reason": form.get("reason") or None,
        "destroy_salt": form.get("destroy_salt") == "true",
    }


def decide_values(form: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "decision": form.get("decision", ""),
        "reason": form.get("reason", ""),
        "destroy_salt": form.get("destroy_salt") == "true",
    }


def status_filter(value: str | None) -> str | None:
    return value if value in STATUSES else None


@dataclass(frozen=True)
class Progress:
    """What the search found: the files it read, those that mention the subject, and the
    models trained on them (flagged when the request was filed)."""

    finished: bool  # nothing more will change on this request (it is decided)
    searching: bool  # a background search is still reading the files
    files_total: int
    lines_scanned: int
    lines_total: int
    percent: int  # of the bytes to read
    scanned_files: int
    matching_files: int
    matching_lines: int
    flagged_models: int


def progress(request: ErasureRequestPublic) -> Progress:
    findings = request.findings or {}
    found = findings.get("files") or []
    search = request.search or {}
    searching = request.status == "searching"
    total = int(search.get("bytes_total") or 0)
    return Progress(
        finished=request.status == "decided",
        searching=searching,
        files_total=int(search.get("files_total") or findings.get("scanned_files") or 0),
        lines_scanned=int(search.get("lines_scanned") or 0),
        lines_total=int(search.get("lines_total") or 0),
        percent=(100 * int(search.get("bytes_scanned") or 0) // total) if total else 100,
        scanned_files=int(
            (search.get("files_done") if searching else findings.get("scanned_files")) or 0
        ),
        matching_files=len(found),
        matching_lines=sum(int(match.get("matching_lines") or 0) for match in found),
        flagged_models=len(findings.get("models") or []),
    )
