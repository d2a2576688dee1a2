"""The regulators' documents for people (Markdown) and spreadsheets (CSV)."""

from __future__ import annotations

import csv
import io
import time
from typing import Any

from gateway.compliance.schemas import RecordsOfProcessing, TrainingContentSummary


def _cell(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        value = ", ".join(str(item) for item in value) or "—"
    text = str(value).replace("\\", "\\\\").replace("|", "\\|")
    return " ".join(text.split()) or "—"


def _date(value: int | str | None) -> str:
    if isinstance(value, int):
        return time.strftime("%Y-%m-%d", time.gmtime(value))
    return _cell(value)


def _table(headers: list[str], rows: list[list[Any]]) -> list[str]:
    out = ["| " + " | ".join(headers) + " |", "|" + " --- |" * len(headers)]
    out += ["| " + " | ".join(_cell(value) for value in row) + " |" for row in rows]
    return [*out, ""]


def _general_section(summary: TrainingContentSummary) -> list[str]:
    g = summary.general
    base = g.base_model
    return [
        f"# Public summary of training content: {g.model_id}",
        "",
        f"{summary.legal_reference}. Generated {summary.generated_at}.",
        "",
        "## 1. General information",
        "",
        *_table(
            ["Field", "Value"],
            [
                ["Provider", g.provider],
                ["Provider contact", g.provider_contact],
                ["Model and version", g.model_id],
                ["Version created", _date(g.version_created_at)],
                ["Placed on the market", _date(g.placed_on_market)],
                ["Base model", base.name if base else None],
                ["Base model licence", base.license if base else None],
                ["Base model documentation", base.documentation if base else None],
                ["Parent model", g.parent_model_id],
                ["Modalities", g.modalities],
                ["Types of content", g.content_types],
                ["Latest data collection", _date(g.latest_data_collection)],
            ],
        ),
        *_table(
            ["Modality", "Examples", "Tokens", "Size range"],
            [[s.modality, s.examples, s.tokens, s.range] for s in g.size],
        ),
        "## 2. List of data sources",
        "",
    ]


def _sources_section(summary: TrainingContentSummary) -> list[str]:
    lines: list[str] = []
    for number, kind in enumerate(summary.data_sources, start=1):
        lines += [f"### 2.{number} {kind.title}", ""]
        if not kind.sources:
            lines += ["None used.", ""]
            continue
        lines += _table(
            ["Source", "Origin", "Categories", "Files", "Examples", "Volume", "Uploaded"],
            [
                [
                    f"{s.name} ({s.data_source})",
                    s.origin,
                    s.categories,
                    s.files,
                    s.examples,
                    s.volume_range,
                    f"{_date(s.first_upload)} to {_date(s.last_upload)}",
                ]
                for s in kind.sources
            ],
        )
    return lines


def _processing_section(summary: TrainingContentSummary) -> list[str]:
    p = summary.processing
    return [
        "## 3. Data processing aspects",
        "",
        "### Personal data",
        "",
        *_table(
            ["Source", "Action", "Recognisers", "Findings", "Redacted lines"],
            [
                [i.data_source, i.action, i.recogniser_sets, i.findings, i.redacted_lines]
                for i in p.pii
            ],
        ),
        f"Exact duplicates: {p.exact_duplicates}; near duplicates: {p.near_duplicates}.",
        "",
        "### Quality gates",
        "",
        *_table(
            ["Source", "Min examples", "Max conflict rate", "Overlap threshold", "Max overlapping"],
            [
                [
                    q.data_source,
                    q.min_examples,
                    q.max_conflict_rate,
                    q.overlap_threshold,
                    q.max_overlapping_lines,
                ]
                for q in p.quality_gates
            ],
        ),
        f"Opt-outs respected: {p.opt_outs}",
        "",
        f"Text and data mining reservations: {p.tdm_opt_outs}",
        "",
        f"Illegal content removal: {p.illegal_content_removal}",
        "",
        "## To be completed by the provider",
        "",
        *[f"- `{item}`" for item in summary.to_complete],
        "",
    ]


def render_summary(summary: TrainingContentSummary) -> str:
    lines = _general_section(summary) + _sources_section(summary) + _processing_section(summary)
    return "\n".join(lines)


CSV_COLUMNS = (
    "data_source",
    "name",
    "personal_data",
    "purposes",
    "data_subject_categories",
    "data_categories",
    "legal_basis",
    "recipients",
    "callers",
    "transfers",
    "retention_days",
    "legal_hold",
    "next_deletion_due",
    "erasure",
    "erased_files",
    "technical_measures",
)


def _joined(value: Any) -> str:
    if isinstance(value, list):
        return "; ".join(str(item) for item in value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    return "" if value is None else str(value)


def records_csv(records: RecordsOfProcessing) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for r in records.records:
        row = r.model_dump()
        row["recipients"] = [m.model_id for m in r.recipients]
        row["transfers"] = (
            r.transfers if isinstance(r.transfers, str) else list(map(str, r.transfers))
        )
        row["callers"] = sorted({c for m in r.recipients for c in m.callers})
        writer.writerow([_joined(row[name]) for name in CSV_COLUMNS])
    return out.getvalue()


def render_records(records: RecordsOfProcessing) -> str:
    lines = [
        f"# Records of processing activities: {records.controller}",
        "",
        f"{records.legal_reference}. Generated {records.generated_at}. "
        f"Controller contact: {records.controller_contact}.",
        "",
    ]
    if not records.records:
        lines += ["No data source of this tenant holds personal data.", ""]
    for r in records.records:
        lines += [
            f"## {r.name} ({r.data_source})",
            "",
            *_table(
                ["Art. 30(1)", "Record"],
                [
                    ["(b) purposes", r.purposes],
                    ["(c) categories of data subjects", r.data_subject_categories],
                    ["(c) categories of personal data", r.data_categories],
                    ["personal data", r.personal_data],
                    ["legal basis (Art. 6)", r.legal_basis],
                    ["(d) recipients", [m.model_id for m in r.recipients] or "none"],
                    ["(d) who can call them", sorted({c for m in r.recipients for c in m.callers})],
                    ["(e) transfers", r.transfers],
                    [
                        "(f) retention",
                        f"{r.retention_days} days from upload"
                        + (" (suspended: legal hold)" if r.legal_hold else ""),
                    ],
                    ["(f) next deletion due", _date(r.next_deletion_due)],
                    ["(f) erasure", r.erasure],
                    ["(g) technical measures", r.technical_measures],
                ],
            ),
        ]
    lines += ["## Notes", "", *[f"- {note}" for note in records.notes], ""]
    return "\n".join(lines)
