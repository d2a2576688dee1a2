"""The dossier's audit section: every event about the model version, its job, its files and
their data sources, each with a Merkle inclusion proof against a signed checkpoint, so a
reader can check offline (audit.offline.verify_proof) that the trail says what the dossier
says. Signs a checkpoint when none covers the chain's head (never commits)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from sqlmodel import Session

from audit import query
from gateway.dossier.schemas import DossierAudit, DossierAuditEntry, DossierPublicKey
from gateway.registry import service as registry
from gateway.registry.models import ModelVersion
from gateway.runtime import Runtime

# Bounds that keep one dossier request proportionate however long the trail grows; the
# dossier says when it hit them.
MAX_EVENTS = 2000
MAX_SCANNED = 20_000
PAGE = 1000


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


def _scopes(
    row: ModelVersion, *, file_ids: set[str | None], data_sources: Iterable[str]
) -> list[tuple[str, Callable[[dict], bool]]]:
    """The resources to read, each with the events of it that count. Events on a data
    source count when they are about the source itself or about one of the files this
    model was trained on. Flags that name an erasure request bring its events in too."""
    everything = lambda event: True  # noqa: E731

    def about_files(event: dict) -> bool:
        details = event.get("details") or {}
        return event["action"].startswith("data_source.") or details.get("file_id") in file_ids

    return [
        (registry.policy_object(row.id), everything),
        (f"job:{row.job_id}", everything),
        *((f"ds:{source}", about_files) for source in sorted(data_sources)),
        *(
            (f"erasure:{flag['ref']}", everything)
            for flag in row.flags
            if flag.get("reason") == "erasure_requested"
        ),
    ]


def _concerning(
    session: Session, *, row: ModelVersion, data_sources: Iterable[str]
) -> tuple[list[dict], list[str], bool]:
    """Every event about this model, its job, its files and its data sources, oldest
    first; the resources read; whether a bound cut the list."""
    file_ids = {entry.get("file_id") for entry in row.data_files}
    scopes = _scopes(row, file_ids=file_ids, data_sources=data_sources)
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


def audit_section(
    session: Session, *, state: Runtime, row: ModelVersion, data_sources: Iterable[str]
) -> DossierAudit:
    """The signed checkpoint, its public key, and the events with their proofs (events
    chained after the checkpoint was signed are left out)."""
    checkpoint = query.latest_checkpoint(session, state.signer)
    events, scopes, truncated = _concerning(session, row=row, data_sources=data_sources)
    size = checkpoint.tree_size if checkpoint is not None else 0
    return DossierAudit(
        checkpoint=checkpoint.to_json() if checkpoint is not None else None,
        public_key=DossierPublicKey(
            key_id=state.signer.key_id, pem=state.signer.public_key_pem().decode()
        ),
        scopes=scopes,
        truncated=truncated,
        events=[
            DossierAuditEntry(event=event, proof=query.inclusion_proof(session, event["seq"], size))
            for event in events
            if event["seq"] <= size
        ],
    )
