"""Every gate a job submission passes, each written once.

A gate is a pure function of the facts it decides on. It returns an ``Outcome``: the
gate's name, the figures behind the decision (kept in the job's decisions when it
passes), and the refusal when it refuses. The submission's read checks
(gateway.jobs.service) call the gates on the rows they read; the writer
(gateway.jobs.writer) calls the same gates again, in the transaction that inserts the
job, on what it re-read and counted there; a dry run can call them without writing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.errors import Forbidden, GatewayError, InvalidRequest, TooManyRequests
from ingest import min_examples_gate, overlap_gate
from ingest.dedup import DEFAULT_THRESHOLD as DEFAULT_OVERLAP_THRESHOLD
from ingest.dedup import FingerprintError

TRAINABLE_PURPOSE = "fine-tune"


@dataclass(frozen=True)
class Outcome:
    gate: str
    figures: dict[str, Any] = field(default_factory=dict)
    refusal: GatewayError | None = None

    @property
    def passed(self) -> bool:
        return self.refusal is None


def base_model_active(name: str, *, status: str) -> Outcome:
    """Nothing new is trained on a retired base model."""
    if status == "active":
        return Outcome("model", {"base_model": name})
    return Outcome(
        "model",
        refusal=InvalidRequest(
            f"base model {name} is {status}",
            code="base_model_retired",
            param="model",
            details={"base_model": name, "status": status},
        ),
    )


def file_usable(file_id: str, *, status: str, stored: bool, param: str | None) -> Outcome:
    """Only a processed file whose content is still stored (not erased, not deleted)."""
    if status != "processed" or not stored:
        return Outcome(
            "file",
            refusal=InvalidRequest(
                f"file {file_id} is {status}: only processed files can be trained on",
                code="file_not_usable",
                param=param,
                details={"file_id": file_id, "status": status},
            ),
        )
    return Outcome("file", {"file_id": file_id})


def file_for_training(file_id: str, *, purpose: str, param: str | None) -> Outcome:
    """Only a file uploaded for fine-tuning (a file's purpose never changes)."""
    if purpose != TRAINABLE_PURPOSE:
        return Outcome(
            "file",
            refusal=InvalidRequest(
                f"file {file_id} was not uploaded for {TRAINABLE_PURPOSE}",
                code="file_not_usable",
                param=param,
            ),
        )
    return Outcome("file", {"file_id": file_id})


PREFERENCE_FORMAT = "preference"


def file_format_for_method(
    file_id: str, *, file_format: str | None, method: str, param: str | None
) -> Outcome:
    """DPO learns from preference files only, supervised training never from one."""
    dpo = method == "dpo"
    if (file_format == PREFERENCE_FORMAT) == dpo:
        return Outcome("file", {"file_id": file_id})
    needed = (
        "a preference file (input, preferred_output, non_preferred_output)"
        if dpo
        else "a chat or prompt/completion file"
    )
    return Outcome(
        "file",
        refusal=InvalidRequest(
            f"file {file_id} is {file_format or 'of no known format'}: method {method!r} "
            f"trains on {needed}",
            code="file_format_mismatch",
            param=param,
            details={"file_id": file_id, "format": file_format, "method": method},
        ),
    )


def source_approved(
    source_id: str,
    *,
    status: str,
    approved_by: str | None = None,
    approval_policy_version: str | None = None,
) -> Outcome:
    """Nothing is trained on a data source that is not (or no longer) approved."""
    if status != "approved":
        return Outcome(
            "data_source_approved",
            refusal=Forbidden(
                f"data source {source_id} is {status}, not approved",
                code="data_source_not_approved",
                details={"data_source": source_id, "status": status},
            ),
        )
    figures = {
        "data_source": source_id,
        "approved_by": approved_by,
        "approval_policy_version": approval_policy_version,
    }
    return Outcome("data_source_approved", figures)


def purpose_allowed(source_id: str, *, purpose: str, allowed_purposes: list[str]) -> Outcome:
    """A source is used only for the purposes it was approved for."""
    if purpose not in allowed_purposes:
        return Outcome(
            "purpose",
            refusal=Forbidden(
                f"purpose {purpose!r} is not allowed for data source {source_id}",
                code="purpose_not_allowed",
                details={
                    "data_source": source_id,
                    "purpose": purpose,
                    "allowed_purposes": allowed_purposes,
                },
            ),
        )
    return Outcome("purpose", {"data_source": source_id, "purpose": purpose})


def enough_examples(examples: int, *, minimum: int) -> Outcome:
    """The training file holds at least the source's minimum of examples."""
    result = min_examples_gate(examples=examples, minimum=minimum)
    if result.passed:
        return Outcome(result.gate, dict(result.details))
    return Outcome(
        result.gate,
        refusal=InvalidRequest(
            result.message,
            code=result.code or "too_few_examples",
            param="training_file",
            details=result.details,
        ),
    )


def no_overlap(
    training_fingerprint: Path,
    validation_fingerprint: Path,
    *,
    threshold: float = DEFAULT_OVERLAP_THRESHOLD,
    max_lines: int = 0,
) -> Outcome:
    """No more than ``max_lines`` validation examples repeat training examples, exactly or
    with similarity >= ``threshold`` (the training file's data source sets both). The
    figures state the tolerance applied; a refusal names the lines (validation line,
    training line, similarity), the first ``dedup.SHOWN`` of each kind."""
    try:
        result = overlap_gate(
            training_fingerprint=training_fingerprint,
            validation_fingerprint=validation_fingerprint,
            threshold=threshold,
            max_overlapping_lines=max_lines,
        )
    except FingerprintError as exc:  # made by an older upload (another shingling): a 400
        return Outcome(
            "train_validation_overlap",
            refusal=InvalidRequest(
                f"a file's near-duplicate fingerprint is outdated ({exc}): upload it again",
                code="fingerprint_outdated",
                param="validation_file",
            ),
        )
    figures = {
        "overlapping_lines": result.details["overlapping_lines"],
        "max_overlapping_lines": max_lines,
        "threshold": threshold,
    }
    if result.passed:
        return Outcome(result.gate, figures)
    matches = sorted(
        (
            {"validation_line": pair["line"], "training_line": pair["of_line"], **extra}
            | {"similarity": pair["similarity"]}
            for kind, extra in (("exact", {"exact": True}), ("near", {"exact": False}))
            for pair in result.details[kind]["pairs"]
        ),
        key=lambda match: match["validation_line"],
    )
    shown = ", ".join(
        f"{m['validation_line']}~{m['training_line']} ({m['similarity']})" for m in matches[:5]
    )
    return Outcome(
        result.gate,
        refusal=InvalidRequest(
            f"{result.message}; validation~training lines: {shown}",
            code=result.code or result.gate,
            param="validation_file",
            details={**figures, "matches": matches},
        ),
    )


def conflict_rate(
    file_id: str, *, datasheet: dict[str, Any] | None, maximum: float | None
) -> Outcome:
    """The training file's share of examples in conflict groups (same or near-same prompt,
    different answers: ingest.conflicts) stays at or under the data source's
    ``max_conflict_rate``. No gate where the source sets none; a datasheet made before
    conflicts were found (no ``conflicts`` entry) is refused when a gate is set."""
    if maximum is None:
        return Outcome("conflicts", {"max_conflict_rate": None})
    found = (datasheet or {}).get("conflicts")
    if not isinstance(found, dict):
        return Outcome(
            "conflicts",
            refusal=InvalidRequest(
                f"file {file_id} was analysed before conflicting answers were looked for; "
                "upload it again to apply the data source's max_conflict_rate",
                code="conflicts_not_analysed",
                param="training_file",
                details={"file_id": file_id, "max_conflict_rate": maximum},
            ),
        )
    rate = float(found.get("rate") or 0.0)
    figures = {
        "conflict_rate": rate,
        "max_conflict_rate": maximum,
        "conflict_groups": int(found.get("groups") or 0),
        "conflicting_lines": int(found.get("lines") or 0),
    }
    if rate <= maximum:
        return Outcome("conflicts", figures)
    groups = [
        {"lines": group.get("lines", []), "similarity": group.get("similarity")}
        for group in found.get("shown", [])
    ]
    named = "; ".join("lines " + ", ".join(map(str, group["lines"][:6])) for group in groups[:5])
    return Outcome(
        "conflicts",
        refusal=InvalidRequest(
            f"{figures['conflicting_lines']} of {found.get('examples', 0)} examples of file "
            f"{file_id} ({rate:.2%}) are in {figures['conflict_groups']} groups of the same "
            f"prompt with different answers; the data source allows {maximum:.2%}: {named}",
            code="too_many_conflicts",
            param="training_file",
            details={**figures, "file_id": file_id, "groups": groups},
        ),
    )


def concurrent_jobs(active: int, *, limit: int) -> Outcome:
    """The tenant's queued and running jobs stay under its quota."""
    if active >= limit:
        return Outcome(
            "quota",
            refusal=TooManyRequests(
                f"{active} jobs are active; the tenant's limit is {limit}",
                details={"quota": "concurrent_jobs", "limit": limit, "current": active},
            ),
        )
    return Outcome("quota", {"active_jobs": active})


def device_hours(used_seconds: float, *, requested_seconds: float, limit_hours: float) -> Outcome:
    """The month's estimated device-hours, this job's included, stay under the quota."""
    used = used_seconds / 3600
    requested = round(requested_seconds / 3600, 6)
    if used + requested > limit_hours:
        return Outcome(
            "quota",
            refusal=TooManyRequests(
                f"this job needs about {requested:.3f} device-hours; {used:.3f} of the "
                f"tenant's {limit_hours:g} this month are used",
                details={
                    "quota": "device_hours_per_month",
                    "limit": limit_hours,
                    "used": round(used, 6),
                    "requested": requested,
                },
            ),
        )
    return Outcome("quota", {"device_hours_used": round(used, 6)})
