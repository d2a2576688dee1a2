"""The technical dossier of a fine-tuned model version, in the spirit of EU AI Act Annex IV:
what it is for, what data made it and how that data was prepared, how it was trained and
evaluated, who approved what, and the audit events behind each of those statements, each
with a Merkle inclusion proof against a signed checkpoint so a reader can check offline
(audit.offline.verify_proof) that the trail says what the dossier says.

Sections (JSON; gateway.dossier.markdown renders the same for people):

- general: identity, hashes, status, provider (tenant)
- intended_purpose: the job's purpose and each data source's allowed purposes
- data: the data sources and the file versions with their datasheets
- preparation: per file, validation -> PII handling -> redaction lineage (input -> output)
- training: hyperparameters, LoRA settings, seed, library versions, compute
- evaluation: the report against the baselines and the verdict
- approvals: data source proposers and approvers, the training request and its decisions,
  promotion (with any override), retirement
- lineage, flags
- audit: the signed checkpoint, its public key, and the events with their proofs
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from typing import Any

import structlog
from sqlmodel import Session

from audit import query
from audit.encoding import now_ts
from gateway.audit_api.service import flush_queue, record_allowed
from gateway.authz import Authorized
from gateway.data_sources.models import DataSource
from gateway.dossier import lineage as lineages
from gateway.dossier.schemas import DOSSIER_FORMAT
from gateway.files.models import TrainingFile
from gateway.jobs.models import FineTuningJob
from gateway.registry import service
from gateway.registry.models import ModelVersion
from gateway.runtime import Runtime

log = structlog.get_logger()

# Bounds that keep one dossier request proportionate however long the trail grows; the
# dossier says when it hit them.
MAX_EVENTS = 2000
MAX_SCANNED = 20_000
PAGE = 1000
DATA_SOURCE_FIELDS = (
    "id",
    "name",
    "description",
    "classification",
    "contains_personal_data",
    "legal_basis",
    "allowed_purposes",
    "owner",
    "retention_days",
    "pii_action",
    "min_examples",
    "status",
)
APPROVAL_FIELDS = (
    "proposed_by",
    "proposed_at",
    "approved_by",
    "approved_at",
    "approval_policy_version",
    "revoked_by",
    "revoked_at",
)


# --- building ---------------------------------------------------------------------------


def _preparation(row: TrainingFile | None, entry: dict[str, Any]) -> dict[str, Any]:
    file_id = entry.get("file_id")
    if row is None:
        return {"file_id": file_id, "steps": [], "note": "the file's record is not held here"}
    report = row.report or {}
    pii = report.get("pii") or {}
    faults = report.get("faults") or {}
    steps: list[dict[str, Any]] = [
        {
            "step": "validation",
            # as validated at upload; an erased file's row says "deleted" since
            "status": report.get("status", row.status),
            "format": report.get("format"),
            "lines": report.get("lines"),
            "examples": report.get("examples", row.examples),
            "faults": faults.get("count"),
            "exact_duplicates": report.get("exact_duplicates"),
            "near_duplicates": report.get("near_duplicates"),
            "tokens": report.get("tokens"),
            "tokenizer": report.get("tokenizer"),
        },
        {
            "step": "pii",
            "action": row.pii_action,
            "recogniser_set": pii.get("recogniser_set"),
            "findings": pii.get("findings"),
            "by_type": [
                {"type": kind, "findings": value.get("findings"), "lines": value.get("lines")}
                for kind, value in sorted((pii.get("by_type") or {}).items())
            ],
        },
    ]
    redaction = lineages.lineage_file(entry, row)["redaction"]
    if redaction is not None:
        steps.append(
            {
                "step": "redaction",
                "input_sha256": redaction.get("input_sha256"),
                "output_sha256": redaction.get("output_sha256"),
                "recogniser_set": redaction.get("recogniser_set"),
                "settings": redaction.get("settings"),
                "redacted_lines": redaction.get("redacted_lines"),
            }
        )
    if row.content_deleted_at is not None:
        steps.append(
            {
                "step": "erasure",
                "content_deleted_at": row.content_deleted_at,
                "erasure_request_id": row.erasure_request_id,
            }
        )
    return {"file_id": file_id, "role": entry.get("role"), "steps": steps}


def _events(
    session: Session,
    *,
    tenant: str,
    resource: str,
    keep: Callable[[dict], bool],
    limit: int,
) -> tuple[list[dict], bool]:
    """The tenant's events on `resource` that `keep` accepts; True when the scan stopped
    at a bound before the end."""
    found: list[dict] = []
    after, scanned = 0, 0
    while True:
        page = query.list_events(session, after=after, limit=PAGE, tenant=tenant, resource=resource)
        scanned += len(page.events)
        found.extend(event for event in page.events if keep(event))
        if page.next_after is None:
            return found, False
        if scanned >= MAX_SCANNED or len(found) >= limit:
            return found, True
        after = page.next_after


def _concerning(
    session: Session,
    *,
    row: ModelVersion,
    job_id: str,
    file_ids: set[str],
    data_sources: Iterable[str],
) -> tuple[list[dict], list[str], bool]:
    """Every event about this model, its job, its files and its data sources, oldest
    first. Events on a data source count when they are about the source itself or about
    one of the files this model was trained on. Flags that name an erasure request bring
    that request's events in too."""
    everything = lambda event: True  # noqa: E731

    def about_files(event: dict) -> bool:
        details = event.get("details") or {}
        return event["action"].startswith("data_source.") or details.get("file_id") in file_ids

    scopes: list[tuple[str, Callable[[dict], bool]]] = [
        (service.policy_object(row.id), everything),
        (f"job:{job_id}", everything),
        *((f"ds:{source}", about_files) for source in sorted(data_sources)),
        *(
            (f"erasure:{flag['ref']}", everything)
            for flag in row.flags
            if flag.get("reason") == "erasure_requested"
        ),
    ]
    by_seq: dict[int, dict] = {}
    truncated = False
    for resource, keep in scopes:
        events, cut = _events(
            session, tenant=row.tenant, resource=resource, keep=keep, limit=MAX_EVENTS
        )
        truncated = truncated or cut
        by_seq.update((event["seq"], event) for event in events)
    ordered = [by_seq[seq] for seq in sorted(by_seq)]
    if len(ordered) > MAX_EVENTS:
        ordered, truncated = ordered[-MAX_EVENTS:], True
    return ordered, [resource for resource, _ in scopes], truncated


def _audit_section(
    session: Session,
    *,
    state: Runtime,
    row: ModelVersion,
    job_id: str,
    file_ids: set[str],
    data_sources: Iterable[str],
) -> dict[str, Any]:
    checkpoint = query.latest_checkpoint(session, state.signer)
    events, scopes, truncated = _concerning(
        session, row=row, job_id=job_id, file_ids=file_ids, data_sources=data_sources
    )
    size = checkpoint.tree_size if checkpoint is not None else 0
    proven = []
    for event in events:
        if event["seq"] > size:  # chained after the checkpoint was signed
            continue
        proven.append({"event": event, "proof": query.inclusion_proof(session, event["seq"], size)})
    return {
        "checkpoint": checkpoint.to_json() if checkpoint is not None else None,
        "public_key": {
            "key_id": state.signer.key_id,
            "pem": state.signer.public_key_pem().decode(),
        },
        "scopes": scopes,
        "truncated": truncated,
        "events": proven,
    }


def build(
    session: Session, *, state: Runtime, authorized: Authorized, model_id: str
) -> dict[str, Any]:
    """Builds the dossier and records its export. The audit queue is flushed first (before
    this session touches the database) so the trail covers everything committed so far."""
    flush_queue(state)
    principal = authorized.principal
    row = service.get_in_tenant(session, tenant=principal.tenant, model_id=model_id)
    job = session.get(FineTuningJob, row.job_id)
    lineage = lineages.build_lineage(session, row=row)
    file_rows = {
        file.id: file
        for file in (
            session.get(TrainingFile, entry.get("file_id", "")) for entry in row.data_files
        )
        if file is not None and file.tenant == row.tenant
    }
    source_ids = sorted(
        {
            entry.get("data_source")
            or getattr(file_rows.get(entry.get("file_id", "")), "data_source_id", None)
            for entry in row.data_files
        }
        - {None}
    )
    sources = [
        source
        for source in (session.get(DataSource, source_id) for source_id in source_ids)
        if source is not None and source.tenant == row.tenant
    ]
    job_purpose = job.purpose if job is not None else row.purpose

    files = []
    for entry in row.data_files:
        file = file_rows.get(entry.get("file_id", ""))
        files.append(
            {
                **lineages.lineage_file(entry, file),
                "bytes": file.bytes if file else None,
                "content_bytes": file.content_bytes if file else None,
                "uploaded_by": file.created_by if file else None,
                "uploaded_at": file.created_at if file else None,
                "datasheet": file.report if file else None,
            }
        )

    dossier = {
        "format": DOSSIER_FORMAT,
        "model_id": row.id,
        "generated_at": now_ts(),
        "generated_by": principal.sub,
        "general": {
            "model_id": row.id,
            "provider": row.tenant,
            "status": row.status,
            "created_at": row.created_at,
            "base_model": row.base_model,
            "base_manifest_sha256": row.base_manifest_sha256,
            "parent_model_id": row.parent_model_id,
            "adapter_sha256": row.adapter_sha256,
            "adapter_files": row.adapter_files,
            "job_id": row.job_id,
            "requested_by": row.requested_by,
        },
        "intended_purpose": {
            "purpose": row.purpose,
            "job_purpose": job_purpose,
            "data_sources": [
                {
                    "data_source": source.id,
                    "name": source.name,
                    "allowed_purposes": source.allowed_purposes,
                    "purpose_allowed": job_purpose in source.allowed_purposes,
                }
                for source in sources
            ],
        },
        "data": {
            "data_sources": [
                {field: getattr(source, field) for field in DATA_SOURCE_FIELDS}
                for source in sources
            ],
            "files": files,
        },
        "preparation": [
            _preparation(file_rows.get(entry.get("file_id", "")), entry) for entry in row.data_files
        ],
        "training": {
            "hyperparameters": row.hyperparameters,
            "lora": job.lora if job is not None else None,
            "seed": row.seed,
            "library_versions": row.library_versions,
            "compute": row.compute,
            "job": None
            if job is None
            else {
                "id": job.id,
                "status": job.status,
                "model": job.model,
                "created_at": job.created_at,
                "finished_at": job.finished_at,
                "trained_tokens": job.trained_tokens,
                "executor": job.executor,
                "estimate": job.estimate,
                "attempts": job.attempts,
            },
        },
        "evaluation": {
            "verdict": row.verdict,
            "configuration": job.evaluation if job is not None else None,
            "report": row.evaluation,
        },
        "approvals": {
            "data_sources": [
                {
                    "data_source": source.id,
                    **{field: getattr(source, field) for field in APPROVAL_FIELDS},
                }
                for source in sources
            ],
            "training_request": {
                "requested_by": row.requested_by,
                "job_id": row.job_id,
                "decisions": row.decisions,
            },
            "promotion": {
                "promoted_by": row.promoted_by,
                "promoted_at": row.promoted_at,
                "override_reason": row.promotion_override_reason,
                "override_reason_sha256": (
                    hashlib.sha256(row.promotion_override_reason.encode()).hexdigest()
                    if row.promotion_override_reason is not None
                    else None
                ),
            },
            "retirement": {"retired_by": row.retired_by, "retired_at": row.retired_at},
        },
        "lineage": lineage,
        "flags": row.flags,
        "audit": _audit_section(
            session,
            state=state,
            row=row,
            job_id=row.job_id,
            file_ids={entry.get("file_id") for entry in row.data_files},
            data_sources=[source.id for source in sources],
        ),
    }
    audit = dossier["audit"]
    record_allowed(
        session,
        authorized=authorized,
        action="model.dossier_exported",
        details={
            "model_id": row.id,
            "format": DOSSIER_FORMAT,
            "events": len(audit["events"]),
            "tree_size": (audit["checkpoint"] or {}).get("tree_size"),
            "truncated": audit["truncated"],
        },
    )
    log.info("model.dossier_exported", model_id=row.id, events=len(audit["events"]))
    return dossier
