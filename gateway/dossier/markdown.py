"""The dossier for people: the same sections as the JSON, as Markdown.

One renderer per section, each returning its lines (the last one blank); render_markdown
joins them in the dossier's order. Values are shown as the JSON has them: a record quotes
its row's own keys (gateway.dossier.records), so both say the same.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from pydantic import BaseModel
from pydantic_core import to_jsonable_python

from gateway.dossier import annex_iv, mislabels
from gateway.dossier.data_quality import data_quality_lines
from gateway.dossier.production import DossierCost, DossierProduction
from gateway.dossier.records import DossierDecision
from gateway.dossier.schemas import (
    DossierApprovals,
    DossierAudit,
    DossierData,
    DossierEvaluation,
    DossierGeneral,
    DossierIntendedPurpose,
    DossierPreparedFile,
    DossierPromotion,
    DossierPublic,
    DossierRedactionStep,
    DossierStep,
    DossierTraining,
    DossierUnheldFile,
    LineagePublic,
)
from gateway.registry.schemas import ModelClearedFlag, ModelFlag

# --- cells, tables, blocks ----------------------------------------------------------------


def _plain(value: Any) -> Any:
    """JSON values as the API serialises them (models become objects)."""
    return to_jsonable_python(value)


def _cell(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, BaseModel | list | dict):
        value = json.dumps(_plain(value), sort_keys=True)
    text = str(value).replace("\\", "\\\\").replace("|", "\\|")
    return " ".join(text.split()) or "—"


def _code(value: Any) -> str:
    return "—" if value is None else f"`{_cell(value).replace('`', '')}`"


def _table(headers: list[str], rows: Iterable[Iterable[Any]]) -> list[str]:
    out = ["| " + " | ".join(headers) + " |", "|" + " --- |" * len(headers)]
    out.extend("| " + " | ".join(_cell(value) for value in row) + " |" for row in rows)
    return [*out, ""]


def _json_block(value: Any) -> list[str]:
    text = json.dumps(_plain(value), indent=2, sort_keys=True, ensure_ascii=False)
    return ["```json", text.replace("```", "` ` `"), "```", ""]


# --- the sections -------------------------------------------------------------------------


def render_header(dossier: DossierPublic) -> list[str]:
    return [
        f"# Technical dossier: {_code(dossier.model_id)}",
        "",
        f"Format `{dossier.format}`, generated {dossier.generated_at} by "
        f"{_cell(dossier.generated_by)}. Structured after EU AI Act Annex IV.",
        "",
    ]


def render_general(general: DossierGeneral) -> list[str]:
    facts: list[list[Any]] = [
        ["model", general.model_id],
        ["provider (tenant)", general.provider],
        ["status", general.status],
        ["created (epoch s)", general.created_at],
        ["base model", general.base_model],
        ["base manifest sha256", general.base_manifest_sha256],
        ["parent model", general.parent_model_id],
        ["adapter sha256", general.adapter_sha256],
        ["fine-tuning job", general.job_id],
        ["requested by", general.requested_by],
    ]
    files = ([f.relative_path, f.sha256, f.bytes] for f in general.adapter_files)
    return [
        "## 1. General description",
        "",
        *_table(["field", "value"], facts),
        "Adapter files:",
        "",
        *_table(["file", "sha256", "bytes"], files),
    ]


def render_intended_purpose(purpose: DossierIntendedPurpose) -> list[str]:
    sources = (
        [s.data_source, s.name, ", ".join(s.allowed_purposes), s.purpose_allowed]
        for s in purpose.data_sources
    )
    return [
        "## 2. Intended purpose",
        "",
        f"Trained for the purpose {_code(purpose.job_purpose)}.",
        "",
        *_table(["data source", "name", "allowed purposes", "purpose allowed"], sources),
    ]


SOURCE_COLUMNS = [
    "id",
    "name",
    "classification",
    "personal data",
    "legal basis",
    "owner",
    "retention (days)",
    "PII action",
    "status",
]
FILE_COLUMNS = [
    "file",
    "role",
    "data source",
    "sha256 (as uploaded)",
    "content sha256 (trained on)",
    "examples",
    "status",
]


def render_data(data: DossierData) -> list[str]:
    sources = (
        [
            s.id,
            s.name,
            s.classification,
            s.contains_personal_data,
            s.legal_basis,
            s.owner,
            s.retention_days,
            s.pii_action,
            s.status,
        ]
        for s in data.data_sources
    )
    files = (
        [f.file_id, f.role, f.data_source, f.sha256, f.content_sha256, f.examples, f.status]
        for f in data.files
    )
    lines = [
        "## 3. Data",
        "",
        "### Data sources",
        "",
        *_table(SOURCE_COLUMNS, sources),
        "### File versions",
        "",
        *_table(FILE_COLUMNS, files),
    ]
    for file in data.files:
        if file.datasheet is not None:
            lines += [f"Datasheet of {_code(file.file_id)}:", "", *_json_block(file.datasheet)]
            lines += data_quality_lines(file.file_id, file.datasheet)
    return lines


def _step_line(step: DossierStep) -> str:
    if isinstance(step, DossierRedactionStep):
        return (
            f"- redaction: {_code(step.input_sha256)} -> {_code(step.output_sha256)}, "
            f"recognisers {_code(step.recogniser_set)}, lines {_cell(step.redacted_lines)}"
        )
    facts = {key: value for key, value in _plain(step).items() if key != "step"}
    return f"- {step.step}: " + ", ".join(f"{key} {_cell(value)}" for key, value in facts.items())


def render_preparation(preparation: list[DossierPreparedFile | DossierUnheldFile]) -> list[str]:
    lines = ["## 4. Data preparation", ""]
    for prepared in preparation:
        lines += [f"### {_code(prepared.file_id)}", ""]
        lines += [_step_line(step) for step in prepared.steps]
        lines.append("")
    return lines


def render_training(training: DossierTraining) -> list[str]:
    settings = sorted(_plain(training.hyperparameters).items())
    return [
        "## 5. Training",
        "",
        *_table(["setting", "value"], [*([k, v] for k, v in settings), ["seed", training.seed]]),
        "LoRA:",
        "",
        *_json_block(training.lora),
        "Library versions:",
        "",
        *_json_block(training.library_versions),
        "Compute:",
        "",
        *_json_block(training.compute),
        "Job:",
        "",
        *_json_block(training.job),
    ]


def render_evaluation(evaluation: DossierEvaluation) -> list[str]:
    lines = ["## 6. Evaluation", "", f"Verdict: **{_cell(evaluation.verdict)}**", ""]
    report = evaluation.report
    if report is None:
        return [*lines, "No evaluation report was recorded.", ""]
    if report.systems:
        lines += ["Against the baselines:", ""]
        lines += _table(
            ["system", "exact match", "token F1", "loss", "perplexity"],
            (
                [name, m.exact_match, m.token_f1, m.loss, m.perplexity]
                for name, m in report.systems.items()
            ),
        )
    if report.verdict is not None and report.verdict.checks is not None:
        lines += _table(
            ["check", "passed", "value", "threshold"],
            ([c.name, c.passed, c.value, c.threshold] for c in report.verdict.checks),
        )
    return [*lines, "Full report:", "", *_json_block(report)]


APPROVAL_COLUMNS = [
    "data source",
    "proposed by",
    "proposed at",
    "approved by",
    "approved at",
    "policy version",
    "revoked by",
    "revoked at",
]


def _decision_row(decision: DossierDecision) -> list[Any]:
    d = _plain(decision)
    name = d.get("name") or d.get("gate") or d.get("act") or d.get("action")
    return [name, d.get("policy_version"), {k: v for k, v in d.items() if k != "policy_version"}]


PROMOTION_REQUEST_COLUMNS = [
    "request",
    "status",
    "requested by",
    "verdict",
    "request policy version",
    "decided by",
    "decision policy version",
]


def _promotion_lines(promotion: DossierPromotion) -> list[str]:
    if promotion.promoted_by is None:
        return ["Not promoted."]
    asked = (
        f"Asked for by {_cell(promotion.requested_by)} (request {_code(promotion.request_id)}, "
        f"policy version {_code(promotion.request_policy_version)}); "
        if promotion.request_id is not None
        else ""
    )
    lines = [
        f"{asked}promoted to production on the approval of {_cell(promotion.promoted_by)} at "
        f"{_cell(promotion.promoted_at)} (epoch s, policy version "
        f"{_code(promotion.approval_policy_version)})."
    ]
    if promotion.override_reason is not None:
        lines += [
            "",
            f"Override reason (sha256 {_code(promotion.override_reason_sha256)}):",
            "",
            "> " + "\n> ".join(promotion.override_reason.splitlines() or [""]),
        ]
    return lines


def render_approvals(approvals: DossierApprovals) -> list[str]:
    sources = (
        [
            a.data_source,
            a.proposed_by,
            a.proposed_at,
            a.approved_by,
            a.approved_at,
            a.approval_policy_version,
            a.revoked_by,
            a.revoked_at,
        ]
        for a in approvals.data_sources
    )
    request = approvals.training_request
    lines = [
        "## 7. Approvals",
        "",
        *_table(APPROVAL_COLUMNS, sources),
        f"Training requested by {_cell(request.requested_by)} "
        f"(job {_code(request.job_id)}). Decisions:",
        "",
        *_table(
            ["decision", "policy version", "details"],
            (_decision_row(decision) for decision in request.decisions),
        ),
        *_promotion_lines(approvals.promotion),
    ]
    if approvals.promotion_requests:
        requests = (
            [
                r.id,
                r.status,
                r.requested_by,
                r.verdict,
                r.request_policy_version,
                r.decided_by,
                r.decision_policy_version,
            ]
            for r in approvals.promotion_requests
        )
        lines += ["", "Promotion requests:", "", *_table(PROMOTION_REQUEST_COLUMNS, requests)]
    retirement = approvals.retirement
    if retirement.retired_by is not None:
        lines += [
            "",
            f"Retired by {_cell(retirement.retired_by)} at "
            f"{_cell(retirement.retired_at)} (epoch s).",
        ]
    deletion = approvals.deletion
    if deletion.deleted_by is not None:
        lines += [
            "",
            f"Adapter deleted by {_cell(deletion.deleted_by)} at {_cell(deletion.deleted_at)} "
            "(epoch s); this record, its lineage and its trail stay.",
        ]
    return [*lines, ""]


def render_lineage(lineage: LineagePublic) -> list[str]:
    versions = (
        [
            v.id,
            v.job_id,
            v.requested_by,
            v.adapter_sha256,
            ", ".join(f"{f.file_id} ({f.content_sha256})" for f in v.data_files),
        ]
        for v in lineage.chain
    )
    return [
        "## 8. Lineage",
        "",
        *_table(["version", "job", "requested by", "adapter sha256", "data files"], versions),
        f"Base model {_code(lineage.base_model.name)}, manifest sha256 "
        f"{_code(lineage.base_model.manifest_sha256)}.",
        "",
    ]


def render_flags(flags: list[ModelFlag], cleared: Sequence[ModelClearedFlag] = ()) -> list[str]:
    lines = ["## 9. Flags", ""]
    if flags:
        rows = ([f.get("reason"), f.get("ref"), f.get("at"), f.get("via")] for f in _plain(flags))
        lines += _table(["reason", "ref", "at", "via"], rows)
    else:
        lines += ["None.", ""]
    if cleared:
        rows = (
            [f.reason, f.ref, f.at, f.cleared_by, f.cleared_at, f.clear_reason] for f in cleared
        )
        lines += [
            "Cleared after review:",
            "",
            *_table(["reason", "ref", "at", "cleared by", "cleared at", "why"], rows),
        ]
    return lines


EVENT_COLUMNS = [
    "seq",
    "time",
    "action",
    "actor",
    "resource",
    "decision",
    "policy version",
    "leaf hash",
]


def render_audit(audit: DossierAudit) -> list[str]:
    checkpoint = audit.checkpoint
    size, root, signed = (
        (checkpoint.tree_size, checkpoint.root_hash, checkpoint.ts) if checkpoint else (None,) * 3
    )
    events = (
        [
            e.event.seq,
            e.event.ts,
            e.event.action,
            e.event.actor,
            e.event.resource,
            e.event.decision,
            e.event.policy_version,
            e.proof.leaf_hash,
        ]
        for e in audit.events
    )
    proofs = {
        "checkpoint": checkpoint,
        "public_key": audit.public_key,
        "proofs": [e.proof for e in audit.events],
    }
    return [
        "## 10. Audit trail",
        "",
        f"Checkpoint: tree size {_cell(size)}, root {_code(root)}, signed {_cell(signed)} by key "
        f"{_code(audit.public_key.key_id)}."
        + (" The event list was cut at its bound." if audit.truncated else ""),
        "",
        *_table(EVENT_COLUMNS, events),
        "Checkpoint, public key and inclusion proofs (check each with "
        "`tunegate audit verify-proof`):",
        "",
        *_json_block(proofs),
    ]


def _cost_lines(cost: DossierCost) -> list[str]:
    training, serving = cost.training, cost.serving
    facts: list[list[Any]] = [
        ["device-hour price", f"{cost.device_hour_price} ({cost.price_device})"],
        ["training: device", training.device],
        ["training: device-hours", training.device_hours],
        ["training: trained tokens", training.trained_tokens],
        ["training: cost", training.cost],
        ["serving: successful calls measured", serving.calls_measured],
        ["serving: tokens measured", serving.tokens_measured],
        ["serving: device-hours", serving.device_hours],
        ["serving: tokens/s", serving.tokens_per_second],
        ["serving: device-hours per 1k tokens", serving.device_hours_per_1k_tokens],
        ["serving: price per 1k tokens", serving.price_per_1k_tokens],
        ["hosted model: price per 1k tokens", cost.hosted_price_per_1k_tokens],
        ["saving per 1k tokens", cost.saving_per_1k_tokens],
        ["break-even (tokens)", cost.break_even_tokens],
        ["break-even (calls, at the mean tokens per call)", cost.break_even_calls],
    ]
    return [
        "### Cost",
        "",
        *_table(["field", "value"], facts),
        *([f"Break-even not given: {cost.note}.", ""] if cost.note else []),
        "Formula:",
        "",
        "```",
        *cost.formula.split("; "),
        "```",
        "",
    ]


REEVALUATION_COLUMNS = [
    "id",
    "trigger",
    "status",
    "finished",
    "degraded",
    "task metrics",
    "OOD loss",
    "error",
]


def render_production(production: DossierProduction) -> list[str]:
    usage = production.usage
    totals: list[list[Any]] = [
        ["status", production.status],
        ["promoted (epoch s)", production.promoted_at],
        ["first call (epoch s)", usage.first_call_at],
        ["last call (epoch s)", usage.last_call_at],
        ["calls", usage.calls],
        ["errors", usage.errors],
        ["prompt tokens", usage.prompt_tokens],
        ["completion tokens", usage.completion_tokens],
        ["callers", usage.users_total],
    ]
    purposes = (
        [p.purpose, p.calls, p.prompt_tokens + p.completion_tokens, p.errors]
        for p in usage.by_purpose
    )
    users = (
        [u.principal, u.calls, u.tokens, u.errors, u.first_call_at, u.last_call_at]
        for u in usage.users
    )
    reevaluations: Iterable[list[Any]] = (
        [
            r.id,
            r.trigger,
            r.status,
            r.finished_at,
            r.degraded,
            ", ".join(f"{m.name} {m.at_promotion:.4g} → {m.now:.4g}" for m in r.metrics) or None,
            None
            if r.ood_probe is None
            else f"{r.ood_probe.at_promotion:.4g} → {r.ood_probe.now:.4g}",
            r.error_code,
        ]
        for r in production.reevaluations
    )
    return [
        "## 11. Use in production",
        "",
        *_table(["field", "value"], totals),
        "By purpose:",
        "",
        *_table(["purpose", "calls", "tokens", "errors"], purposes),
        "Callers:",
        "",
        *_table(["caller", "calls", "tokens", "errors", "first call", "last call"], users),
        "### Re-evaluations after release",
        "",
        *_table(REEVALUATION_COLUMNS, reevaluations),
        *_cost_lines(production.cost),
    ]


def render_markdown(dossier: DossierPublic) -> str:
    lines = [
        *render_header(dossier),
        *render_general(dossier.general),
        *render_intended_purpose(dossier.intended_purpose),
        *render_data(dossier.data),
        *render_preparation(dossier.preparation),
        *render_training(dossier.training),
        *render_evaluation(dossier.evaluation),
        *render_approvals(dossier.approvals),
        *render_lineage(dossier.lineage),
        *render_flags(dossier.flags, dossier.cleared_flags),
        *render_audit(dossier.audit),
        *render_production(dossier.production),
        *mislabels.render(dossier.suspected_mislabels, _table),
        *annex_iv.render(dossier.annex_iv),
    ]
    return "\n".join(lines)
