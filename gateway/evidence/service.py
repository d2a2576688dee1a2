"""Building a model version's evidence bundle: the dossier (whose audit section selects
the model's events and proves them against one signed checkpoint), the training-content
summary, the lineage, the events with their proofs, the checkpoint as a C2SP signed note
with the witnesses' cosignatures, and the keys. The zip is written to a spooled temporary
file (spilling to disk past SPOOL_BYTES) and its sha256 is computed while it is written;
the export is audited with it. Never commits."""

from __future__ import annotations

import base64
import json
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

import structlog
from sqlalchemy import desc, select
from sqlmodel import Session, col

from audit import query
from audit.checkpoints import Checkpoint, Signer
from audit.encoding import now_ts
from gateway.audit_api import service as audit_service
from gateway.authz import Authorized
from gateway.dossier import service as dossier_service
from gateway.dossier.markdown import render_markdown
from gateway.dossier.schemas import DossierPublic
from gateway.errors import NotFound
from gateway.evidence import bundle
from gateway.evidence.verify_md import verify_md
from gateway.registry import service as registry
from gateway.runtime import Runtime
from gateway.witness.cosignatures import with_cosignatures
from gateway.witness.models import AuditCosignature

log = structlog.get_logger()

SPOOL_BYTES = 8 << 20
CHUNK = 64 << 10


@dataclass
class Evidence:
    """The written bundle, rewound, for the route to stream; ``chunks()`` closes it."""

    file: IO[bytes]
    sha256: str
    size: int
    filename: str

    def chunks(self) -> Iterator[bytes]:
        try:
            while chunk := self.file.read(CHUNK):
                yield chunk
        finally:
            self.file.close()


def _summary(session: Session, *, state: Runtime, authorized: Authorized, model_id: str):
    try:
        from gateway.compliance import markdown as summary_markdown
        from gateway.compliance import service as compliance
    except ImportError:  # pragma: no cover - the summary (issue 16 §4) is not installed
        return None, None
    summary = compliance.training_content_summary(
        session, state=state, authorized=authorized, model_id=model_id
    )
    return summary.model_dump(mode="json"), summary_markdown.render_summary(summary)


def _witnessed(session: Session, *, state: Runtime, covering: int) -> Checkpoint | None:
    """The newest checkpoint by the gateway's key that a witness cosigned and that holds
    event ``covering``: the bundle's proofs lead to it, so its cosignatures vouch for them.
    (The checkpoint the dossier signed just now has had no time to be witnessed.)"""
    sizes = session.scalars(
        select(col(AuditCosignature.tree_size))
        .where(col(AuditCosignature.tree_size) >= max(covering, 1))
        .order_by(desc(col(AuditCosignature.tree_size)))
        .limit(1)
    ).all()
    for size in sizes:
        found = query.checkpoint_at(session, size)
        if found is not None and found.key_id == state.signer.key_id:
            return found
    return None


def _proofs(
    session: Session, *, audit: Any, checkpoint: Checkpoint, newest: Checkpoint
) -> list[dict[str, Any]]:
    """The dossier's events with their inclusion proofs against ``checkpoint`` (the
    dossier's own proofs when it is the dossier's checkpoint)."""
    if checkpoint.tree_size == newest.tree_size:
        return [entry.proof.model_dump() for entry in audit.events]
    return [
        query.inclusion_proof(session, entry.event.seq, checkpoint.tree_size)
        for entry in audit.events
    ]


def witness_vkeys(state: Runtime) -> list[str]:
    """The configured witnesses' verifier keys ('URL VKEY' entries: the last word)."""
    return [entry.split()[-1] for entry in state.settings.audit_witnesses if entry.split()]


def _write_members(
    writer: bundle.BundleWriter,
    *,
    dossier: DossierPublic,
    summary: dict[str, Any] | None,
    summary_md: str | None,
    proofs: list[dict[str, Any]],
    note: str,
    signer: Signer,
    witnesses: list[str],
    tree_size: int,
) -> None:
    """The bundle's members, in their order in the zip."""
    writer.add("dossier.json", bundle.json_bytes(dossier.model_dump(mode="json")))
    writer.add("dossier.md", render_markdown(dossier).encode("utf-8"))
    if summary is not None and summary_md is not None:
        writer.add("training_content_summary.json", bundle.json_bytes(summary))
        writer.add("training_content_summary.md", summary_md.encode("utf-8"))
    writer.add("lineage.json", bundle.json_bytes(dossier.lineage.model_dump(mode="json")))
    writer.add_lines(
        bundle.EVENTS,
        (
            bundle.event_line(
                json.loads(proof["body"]),
                index=proof["leaf_index"],
                tree_size=proof["tree_size"],
                hashes=[bytes.fromhex(h) for h in proof["hashes"]],
            )
            for proof in proofs
        ),
    )
    writer.add(bundle.CHECKPOINT, note.encode("utf-8"))
    writer.add(bundle.LOG_VKEY, signer.vkey.encode("ascii") + b"\n")
    writer.add(bundle.LOG_PEM, signer.public_key_pem())
    if witnesses:
        writer.add(bundle.WITNESS_VKEYS, "".join(f"{v}\n" for v in witnesses).encode())
    writer.add(
        "VERIFY.md",
        verify_md(
            model_id=dossier.model_id,
            origin=signer.origin,
            tree_size=tree_size,
            vkey=signer.vkey,
            witnesses=len(witnesses),
            summary=summary is not None,
        ).encode("utf-8"),
    )


def export(session: Session, *, state: Runtime, authorized: Authorized, model_id: str) -> Evidence:
    """The evidence bundle of ``model_id`` (404 for another tenant's or none), its export
    audited as ``model.evidence_exported`` with the bundle's sha256."""
    dossier = dossier_service.build(session, state=state, authorized=authorized, model_id=model_id)
    audit = dossier.audit
    if audit.checkpoint is None:
        raise NotFound("the audit trail is empty", code="audit_trail_empty")
    newest = Checkpoint.from_json(audit.checkpoint.model_dump(mode="json"))
    checkpoint = _witnessed(
        session, state=state, covering=max((e.event.seq for e in audit.events), default=0)
    )
    checkpoint = checkpoint or newest
    note = audit_service.checkpoint_note(session, state, checkpoint)
    note = with_cosignatures(session, note, checkpoint.tree_size, checkpoint.root_hash)
    proofs = _proofs(session, audit=audit, checkpoint=checkpoint, newest=newest)
    summary, summary_md = _summary(session, state=state, authorized=authorized, model_id=model_id)
    signer = audit_service.note_signer(state)
    witnesses = witness_vkeys(state)
    manifest: dict[str, Any] = {
        "format": bundle.BUNDLE_FORMAT,
        "model_id": dossier.model_id,
        "tenant": authorized.principal.tenant,
        "generated_at": now_ts(),
        "generated_by": authorized.principal.sub,
        "origin": signer.origin,
        "tree_size": checkpoint.tree_size,
        "root_hash": base64.b64encode(checkpoint.root_hash).decode("ascii"),
        "events": len(audit.events),
        "truncated": audit.truncated,
        "training_content_summary": summary is not None,
    }
    spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)  # noqa: SIM115 (streamed later)
    try:
        with bundle.BundleWriter(spool, manifest) as writer:
            _write_members(
                writer,
                dossier=dossier,
                summary=summary,
                summary_md=summary_md,
                proofs=proofs,
                note=note,
                signer=signer,
                witnesses=witnesses,
                tree_size=checkpoint.tree_size,
            )
    except BaseException:
        spool.close()
        raise
    audit_service.record_allowed(
        session,
        authorized=authorized,
        action="model.evidence_exported",
        resource=registry.policy_object(dossier.model_id),
        details={
            "model_id": dossier.model_id,
            "format": bundle.BUNDLE_FORMAT,
            "sha256": writer.sha256,
            "bytes": writer.size,
            "events": len(audit.events),
            "tree_size": checkpoint.tree_size,
            "witnesses": len(witnesses),
        },
    )
    log.info(
        "model.evidence_exported",
        model_id=dossier.model_id,
        sha256=writer.sha256,
        events=len(audit.events),
    )
    spool.seek(0)
    return Evidence(
        file=spool,
        sha256=writer.sha256,
        size=writer.size,
        filename=f"{dossier.model_id}-evidence.zip",
    )
