"""The dossier against EU AI Act Annex IV's nine points: for each point, what the dossier
fills it from (its sections and the records behind them) and what is not recorded. Pure:
reads the assembled dossier, writes nothing; gateway.dossier.service attaches it, and
gateway.dossier.markdown renders it as the dossier's last section."""

from __future__ import annotations

from collections.abc import Callable

from gateway.dossier.annex_iv_schemas import (
    NOT_RECORDED,
    AnnexIVPoint,
    DossierAnnexIV,
    Status,
)
from gateway.dossier.schemas import DossierPublic

# What each point asks, as (element, the dossier's answer or None when nothing records it).
Check = Callable[[DossierPublic], list[tuple[str, str | None]]]


def _p1(d: DossierPublic) -> list[tuple[str, str | None]]:
    return [
        ("intended purpose", "intended_purpose" if d.intended_purpose.purpose else None),
        ("provider and version", "general (provider, model_id, created_at)"),
        (
            "software versions it runs with",
            "training.library_versions" if d.training.library_versions else None,
        ),
        ("hardware it runs on", "training.compute" if d.training.compute else None),
        ("forms in which it is placed on the market", "general.adapter_files (LoRA adapter)"),
        ("instructions for use", None),
        ("user interface provided to deployers", None),
    ]


def _p2(d: DossierPublic) -> list[tuple[str, str | None]]:
    return [
        (
            "development methods and steps (pre-trained base, fine-tuning)",
            "general.base_model, lineage",
        ),
        (
            "design specifications (hyperparameters, LoRA)",
            "training.hyperparameters, training.lora"
            if d.training.job is not None
            else "training.hyperparameters",
        ),
        (
            "data requirements and datasheets",
            "data (data sources, datasheets)" if d.data.files else None,
        ),
        ("data preparation (validation, PII, redaction)", "preparation" if d.preparation else None),
        (
            "validation and testing procedures and metrics",
            "evaluation" if d.evaluation.report is not None else None,
        ),
        ("human oversight measures (approvals, four eyes)", "approvals"),
        ("cybersecurity measures", None),
    ]


def _p3(d: DossierPublic) -> list[tuple[str, str | None]]:
    return [
        (
            "capabilities and limitations in performance, accuracy",
            "evaluation.report" if d.evaluation.report is not None else None,
        ),
        ("foreseeable unintended outcomes and risks", "flags" if d.flags else None),
        (
            "input data specifications",
            "data.files (formats, token statistics)" if d.data.files else None,
        ),
    ]


def _p4(d: DossierPublic) -> list[tuple[str, str | None]]:
    return [
        (
            "performance metrics and their appropriateness",
            "evaluation (baselines, verdict)" if d.evaluation.verdict is not None else None,
        ),
        ("why these metrics are appropriate", None),
    ]


def _p5(d: DossierPublic) -> list[tuple[str, str | None]]:
    return [("risk management system (Art. 9)", None)]


def _p6(d: DossierPublic) -> list[tuple[str, str | None]]:
    return [
        ("changes through the lifecycle", "lineage, approvals (promotion, retirement), audit"),
    ]


def _p7(d: DossierPublic) -> list[tuple[str, str | None]]:
    return [("harmonised standards or other specifications applied", None)]


def _p8(d: DossierPublic) -> list[tuple[str, str | None]]:
    return [("EU declaration of conformity (Art. 47)", None)]


def _p9(d: DossierPublic) -> list[tuple[str, str | None]]:
    return [
        ("post-market monitoring (Art. 72)", "production (use, re-evaluations after release)"),
        ("post-market monitoring plan", None),
    ]


POINTS: tuple[tuple[int, str, Check], ...] = (
    (1, "General description of the AI system", _p1),
    (2, "Elements of the AI system and the process of its development", _p2),
    (3, "Monitoring, functioning and control of the AI system", _p3),
    (4, "Appropriateness of the performance metrics", _p4),
    (5, "Risk management system (Art. 9)", _p5),
    (6, "Relevant changes through the lifecycle", _p6),
    (7, "Harmonised standards applied", _p7),
    (8, "EU declaration of conformity", _p8),
    (9, "Post-market monitoring (Art. 72)", _p9),
)


def check(dossier: DossierPublic) -> DossierAnnexIV:
    points = []
    for number, title, ask in POINTS:
        answers = ask(dossier)
        filled = [f"{element}: {source}" for element, source in answers if source is not None]
        missing = [element for element, source in answers if source is None]
        status: Status = (
            "not recorded" if not filled else "partly recorded" if missing else "recorded"
        )
        points.append(
            AnnexIVPoint(
                point=number, title=title, status=status, filled_from=filled, not_recorded=missing
            )
        )
    return DossierAnnexIV(points=points)


def render(annex: DossierAnnexIV | None) -> list[str]:
    if annex is None:
        return []
    lines = ["## Annex IV checklist", "", "| Point | Title | Status |", "| --- | --- | --- |"]
    lines += [f"| {p.point} | {p.title} | {p.status} |" for p in annex.points]
    lines.append("")
    for p in annex.points:
        lines.append(f"### Point {p.point}. {p.title}")
        lines.append("")
        lines += [f"- {item}" for item in p.filled_from]
        lines += [f"- {item}: **{NOT_RECORDED}**" for item in p.not_recorded]
        lines.append("")
    return lines
