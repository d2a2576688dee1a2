"""The dossier's plain-words summary of a file's data quality at upload (issue 17):
conflicting answers and structured answers, from the datasheet (the JSON block above it
quotes every figure). Line numbers and counts only, never an example's text."""

from __future__ import annotations

from typing import Any

from gateway.dossier.records import DossierDatasheet

SHOWN = 5


def data_quality_lines(file_id: str, datasheet: DossierDatasheet) -> list[str]:
    facts = datasheet.model_dump(by_alias=True)
    conflicts: dict[str, Any] | None = facts.get("conflicts")
    structure: dict[str, Any] | None = facts.get("structure")
    if conflicts is None and structure is None:
        return []
    lines = [f"Data quality of `{file_id}`:", ""]
    if conflicts is None:
        lines.append("- conflicting answers: not analysed")
    else:
        groups = conflicts.get("shown") or []
        named = "; ".join(
            "lines " + ", ".join(str(line) for line in (group.get("lines") or [])[:SHOWN])
            for group in groups[:SHOWN]
        )
        lines.append(
            f"- conflicting answers: {conflicts.get('groups', 0)} groups, "
            f"{conflicts.get('lines', 0)} of {conflicts.get('examples', 0)} examples "
            f"(rate {conflicts.get('rate', 0)}), {conflicts.get('suspect_lines', 0)} suspect"
            + (f" ({named})" if named else "")
        )
    if structure is None:
        lines.append("- structured answers: not analysed")
    elif not structure.get("detected"):
        lines.append(
            f"- structured answers: none detected ({structure.get('json_objects', 0)} of "
            f"{structure.get('answers', 0)} answers are JSON objects)"
        )
    else:
        by_reason = (structure.get("deviations") or {}).get("by_reason") or {}
        deviations = ", ".join(f"{reason} {count}" for reason, count in by_reason.items())
        keys = ", ".join(f"`{key}`" for key in structure.get("fields") or {})
        lines.append(
            f"- structured answers: JSON objects with keys {keys or '—'}; "
            f"deviating lines: {deviations or 'none'}"
        )
    return [*lines, ""]
