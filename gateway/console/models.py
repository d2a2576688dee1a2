"""What the model pages draw: the lineage as a graph and the evaluation as bars."""

from __future__ import annotations

from typing import Any

from markupsafe import Markup

from gateway.console import charts
from gateway.dossier.schemas import LineagePublic

METRICS = (("exact_match", "exact match"), ("token_f1", "token F1"))
SYSTEM_NAMES = {
    "base_zero_shot": "base, zero-shot",
    "base_few_shot": "base, few-shot",
    "tuned": "tuned",
}
STATUSES = ("candidate", "production", "retired")


def lineage_graph(lineage: LineagePublic) -> Markup:
    rows = []
    for version in lineage.chain:
        files = [
            charts.Node(
                f"{f.role or 'data'}: {f.file_id}",
                f"sha256 {(f.sha256 or '?')[:16]}…",
                f"/console/data-sources/{f.data_source}" if f.data_source else None,
            )
            for f in version.data_files
        ]
        rows.append(
            [
                *files,
                charts.Node(f"job {version.job_id}", f"by {version.requested_by}"),
                charts.Node("adapter", f"sha256 {version.adapter_sha256[:16]}…"),
                charts.Node(version.id, version.status, f"/console/models/{version.id}"),
            ]
        )
    base = lineage.base_model
    return charts.lineage(
        rows, charts.Node(f"base {base.name}", f"manifest {base.manifest_sha256[:16]}…")
    )


def evaluation_rows(evaluation: dict[str, Any] | None) -> list[dict[str, Any]]:
    systems = (evaluation or {}).get("systems") or {}
    return [
        {"system": SYSTEM_NAMES.get(name, name), **metrics}
        for name, metrics in systems.items()
        if isinstance(metrics, dict)
    ]


def evaluation_chart(evaluation: dict[str, Any] | None) -> Markup | None:
    systems = (evaluation or {}).get("systems") or {}
    if not systems:
        return None
    groups = [
        (label, [(SYSTEM_NAMES.get(n, n), float(m.get(key) or 0.0)) for n, m in systems.items()])
        for key, label in METRICS
    ]
    return charts.bars(groups, title="Evaluation on the held-out set")
