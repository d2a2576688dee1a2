"""The dossier for people: the same sections as the JSON, as Markdown."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any


def _cell(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | dict):
        value = json.dumps(value, sort_keys=True)
    text = str(value).replace("\\", "\\\\").replace("|", "\\|")
    return " ".join(text.split()) or "—"


def _code(value: Any) -> str:
    return "—" if value is None else f"`{_cell(value).replace('`', '')}`"


def _table(headers: list[str], rows: Iterable[Iterable[Any]]) -> list[str]:
    out = ["| " + " | ".join(headers) + " |", "|" + " --- |" * len(headers)]
    out.extend("| " + " | ".join(_cell(value) for value in row) + " |" for row in rows)
    return [*out, ""]


def _json_block(value: Any) -> list[str]:
    text = json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)
    return ["```json", text.replace("```", "` ` `"), "```", ""]


def _evaluation_lines(evaluation: dict[str, Any]) -> list[str]:
    lines = [f"Verdict: **{_cell(evaluation.get('verdict'))}**", ""]
    report = evaluation.get("report")
    if not isinstance(report, dict):
        return [*lines, "No evaluation report was recorded.", ""]
    systems = report.get("systems")
    if isinstance(systems, dict) and systems:
        lines += ["Against the baselines:", ""]
        lines += _table(
            ["system", "exact match", "token F1", "loss", "perplexity"],
            (
                [
                    name,
                    *(
                        metrics.get(key)
                        for key in ("exact_match", "token_f1", "loss", "perplexity")
                    ),
                ]
                for name, metrics in systems.items()
                if isinstance(metrics, dict)
            ),
        )
    verdict = report.get("verdict")
    if isinstance(verdict, dict) and isinstance(verdict.get("checks"), list):
        lines += _table(
            ["check", "passed", "value", "threshold"],
            (
                [check.get("name"), check.get("passed"), check.get("value"), check.get("threshold")]
                for check in verdict["checks"]
                if isinstance(check, dict)
            ),
        )
    return [*lines, "Full report:", "", *_json_block(report)]


def render_markdown(dossier: dict[str, Any]) -> str:
    general = dossier["general"]
    purpose = dossier["intended_purpose"]
    data = dossier["data"]
    approvals = dossier["approvals"]
    audit = dossier["audit"]
    lines = [
        f"# Technical dossier: {_code(dossier['model_id'])}",
        "",
        f"Format `{dossier['format']}`, generated {dossier['generated_at']} by "
        f"{_cell(dossier['generated_by'])}. Structured after EU AI Act Annex IV.",
        "",
        "## 1. General description",
        "",
        *_table(
            ["field", "value"],
            [
                ["model", general["model_id"]],
                ["provider (tenant)", general["provider"]],
                ["status", general["status"]],
                ["created (epoch s)", general["created_at"]],
                ["base model", general["base_model"]],
                ["base manifest sha256", general["base_manifest_sha256"]],
                ["parent model", general["parent_model_id"]],
                ["adapter sha256", general["adapter_sha256"]],
                ["fine-tuning job", general["job_id"]],
                ["requested by", general["requested_by"]],
            ],
        ),
        "Adapter files:",
        "",
        *_table(
            ["file", "sha256", "bytes"],
            (
                [f.get("relative_path"), f.get("sha256"), f.get("bytes")]
                for f in general["adapter_files"]
            ),
        ),
        "## 2. Intended purpose",
        "",
        f"Trained for the purpose {_code(purpose['job_purpose'])}.",
        "",
        *_table(
            ["data source", "name", "allowed purposes", "purpose allowed"],
            (
                [
                    s["data_source"],
                    s["name"],
                    ", ".join(s["allowed_purposes"]),
                    s["purpose_allowed"],
                ]
                for s in purpose["data_sources"]
            ),
        ),
        "## 3. Data",
        "",
        "### Data sources",
        "",
        *_table(
            [
                "id",
                "name",
                "classification",
                "personal data",
                "legal basis",
                "owner",
                "retention (days)",
                "PII action",
                "status",
            ],
            (
                [
                    s["id"],
                    s["name"],
                    s["classification"],
                    s["contains_personal_data"],
                    s["legal_basis"],
                    s["owner"],
                    s["retention_days"],
                    s["pii_action"],
                    s["status"],
                ]
                for s in data["data_sources"]
            ),
        ),
        "### File versions",
        "",
        *_table(
            [
                "file",
                "role",
                "data source",
                "sha256 (as uploaded)",
                "content sha256 (trained on)",
                "examples",
                "status",
            ],
            (
                [
                    f["file_id"],
                    f["role"],
                    f["data_source"],
                    f["sha256"],
                    f["content_sha256"],
                    f["examples"],
                    f["status"],
                ]
                for f in data["files"]
            ),
        ),
    ]
    for file in data["files"]:
        if file.get("datasheet") is not None:
            lines += [
                f"Datasheet of {_code(file['file_id'])}:",
                "",
                *_json_block(file["datasheet"]),
            ]
    lines += ["## 4. Data preparation", ""]
    for prepared in dossier["preparation"]:
        lines += [f"### {_code(prepared['file_id'])}", ""]
        for step in prepared["steps"]:
            name = step["step"]
            rest = {key: value for key, value in step.items() if key != "step"}
            if name == "redaction":
                lines.append(
                    f"- redaction: {_code(rest.get('input_sha256'))} -> "
                    f"{_code(rest.get('output_sha256'))}, recognisers "
                    f"{_code(rest.get('recogniser_set'))}, "
                    f"lines {_cell(rest.get('redacted_lines'))}"
                )
            else:
                lines.append(
                    f"- {name}: "
                    + ", ".join(f"{key} {_cell(value)}" for key, value in rest.items())
                )
        lines.append("")
    training = dossier["training"]
    lines += [
        "## 5. Training",
        "",
        *_table(
            ["setting", "value"],
            [
                *([key, value] for key, value in sorted(training["hyperparameters"].items())),
                ["seed", training["seed"]],
            ],
        ),
        "LoRA:",
        "",
        *_json_block(training["lora"]),
        "Library versions:",
        "",
        *_json_block(training["library_versions"]),
        "Compute:",
        "",
        *_json_block(training["compute"]),
        "Job:",
        "",
        *_json_block(training["job"]),
        "## 6. Evaluation",
        "",
        *_evaluation_lines(dossier["evaluation"]),
        "## 7. Approvals",
        "",
        *_table(
            [
                "data source",
                "proposed by",
                "proposed at",
                "approved by",
                "approved at",
                "policy version",
                "revoked by",
                "revoked at",
            ],
            (
                [
                    a["data_source"],
                    a["proposed_by"],
                    a["proposed_at"],
                    a["approved_by"],
                    a["approved_at"],
                    a["approval_policy_version"],
                    a["revoked_by"],
                    a["revoked_at"],
                ]
                for a in approvals["data_sources"]
            ),
        ),
        f"Training requested by {_cell(approvals['training_request']['requested_by'])} "
        f"(job {_code(approvals['training_request']['job_id'])}). Decisions:",
        "",
        *_table(
            ["decision", "policy version", "details"],
            (
                [
                    d.get("name") or d.get("gate") or d.get("act") or d.get("action"),
                    d.get("policy_version"),
                    {k: v for k, v in d.items() if k not in ("policy_version",)},
                ]
                for d in approvals["training_request"]["decisions"]
                if isinstance(d, dict)
            ),
        ),
    ]
    promotion = approvals["promotion"]
    if promotion["promoted_by"] is not None:
        lines.append(
            f"Promoted to production by {_cell(promotion['promoted_by'])} at "
            f"{_cell(promotion['promoted_at'])} (epoch s)."
        )
        if promotion["override_reason"] is not None:
            lines += [
                "",
                f"Override reason (sha256 {_code(promotion['override_reason_sha256'])}):",
                "",
                "> " + "\n> ".join(promotion["override_reason"].splitlines() or [""]),
            ]
    else:
        lines.append("Not promoted.")
    retirement = approvals["retirement"]
    if retirement["retired_by"] is not None:
        lines += [
            "",
            f"Retired by {_cell(retirement['retired_by'])} at "
            f"{_cell(retirement['retired_at'])} (epoch s).",
        ]
    lineage = dossier["lineage"]
    lines += [
        "",
        "## 8. Lineage",
        "",
        *_table(
            ["version", "job", "requested by", "adapter sha256", "data files"],
            (
                [
                    v["id"],
                    v["job_id"],
                    v["requested_by"],
                    v["adapter_sha256"],
                    ", ".join(f"{f['file_id']} ({f['content_sha256']})" for f in v["data_files"]),
                ]
                for v in lineage["chain"]
            ),
        ),
        f"Base model {_code(lineage['base_model']['name'])}, manifest sha256 "
        f"{_code(lineage['base_model']['manifest_sha256'])}.",
        "",
        "## 9. Flags",
        "",
    ]
    if dossier["flags"]:
        lines += _table(
            ["reason", "ref", "at", "via"],
            ([f.get("reason"), f.get("ref"), f.get("at"), f.get("via")] for f in dossier["flags"]),
        )
    else:
        lines += ["None.", ""]
    checkpoint = audit["checkpoint"] or {}
    lines += [
        "## 10. Audit trail",
        "",
        f"Checkpoint: tree size {_cell(checkpoint.get('tree_size'))}, root "
        f"{_code(checkpoint.get('root_hash'))}, signed {_cell(checkpoint.get('ts'))} by key "
        f"{_code(audit['public_key']['key_id'])}."
        + (" The event list was cut at its bound." if audit["truncated"] else ""),
        "",
        *_table(
            [
                "seq",
                "time",
                "action",
                "actor",
                "resource",
                "decision",
                "policy version",
                "leaf hash",
            ],
            (
                [
                    e["event"]["seq"],
                    e["event"]["ts"],
                    e["event"]["action"],
                    e["event"]["actor"],
                    e["event"]["resource"],
                    e["event"]["decision"],
                    e["event"]["policy_version"],
                    e["proof"]["leaf_hash"],
                ]
                for e in audit["events"]
            ),
        ),
        "Checkpoint, public key and inclusion proofs (check each with "
        "`tunegate audit verify-proof`):",
        "",
        *_json_block(
            {
                "checkpoint": audit["checkpoint"],
                "public_key": audit["public_key"],
                "proofs": [e["proof"] for e in audit["events"]],
            }
        ),
    ]
    return "\n".join(lines)
