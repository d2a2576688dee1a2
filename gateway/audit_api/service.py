"""Recording and reading the audit trail on behalf of the routes. Never commits."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from sqlmodel import Session

from audit import chain, query, verify
from audit.checkpoints import Checkpoint
from gateway import metrics
from gateway.db import read_only
from gateway.deps import Authorized, after_commit
from gateway.errors import InvalidRequest, NotFound

SEQUENCER_NOTIFIED = "audit_sequencer_notified"


def record(
    session: Session,
    *,
    actor: str,
    tenant: str,
    action: str,
    resource: str,
    decision: str,
    policy_version: str | None = None,
    details: Mapping[str, Any] | None = None,
) -> int:
    """Records one event in the session's transaction, so it lands with the change it
    describes or not at all. It is queued, not chained: chaining serialises on the chain
    head, and holding that lock through every request's commit would make the gateway
    one-request-at-a-time. The sequencer chains it right after the commit."""
    state = session.info["gateway"]
    queued = chain.enqueue(
        session,
        actor=actor,
        tenant=tenant,
        action=action,
        resource=resource,
        decision=decision,
        policy_version=policy_version,
        details=details,
    )
    if not session.info.get(SEQUENCER_NOTIFIED):
        session.info[SEQUENCER_NOTIFIED] = True
        after_commit(session, state.notify_sequencer)
    metrics.AUDIT_EVENTS.inc()
    return queued


def flush_queue(session: Session) -> None:
    """Chains everything committed so far, so that a reader sees their own writes. Runs
    before the request's session has touched the database: on SQLite the request's
    transaction would otherwise hold the write lock that chaining needs."""
    session.info["gateway"].flush_audit_queue()


def record_allowed(
    session: Session,
    *,
    authorized: Authorized,
    action: str,
    resource: str | None = None,
    details: Mapping[str, Any] | None = None,
) -> int:
    """The audit event of a governed change, carrying the decision that allowed it."""
    return record(
        session,
        **allowed_event(authorized=authorized, action=action, resource=resource, details=details),
    )


def allowed_event(
    *,
    authorized: Authorized,
    action: str,
    resource: str | None = None,
    details: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """record_allowed's event, as keyword arguments for record or audit.chain.enqueue."""
    principal = authorized.principal
    return {
        "actor": principal.sub,
        "tenant": principal.tenant,
        "action": action,
        "resource": resource or authorized.obj,
        "decision": "allow",
        "policy_version": authorized.policy_version,
        "details": {
            "route": authorized.route,
            "method": authorized.method,
            "act": authorized.act,
            "rule": list(authorized.rule) if authorized.rule else None,
            **(details or {}),
        },
    }


def _scoped_filters(authorized: Authorized, filters: Mapping[str, Any]) -> dict[str, Any]:
    # A caller reads its own tenant's trail; the tenant filter cannot widen that.
    tenant = authorized.principal.tenant
    if filters.get("tenant") not in (None, tenant):
        raise NotFound(
            f"no audit events for tenant {filters['tenant']!r}", code="tenant_not_visible"
        )
    return {**{k: v for k, v in filters.items() if v is not None}, "tenant": tenant}


def list_events(
    session: Session,
    *,
    authorized: Authorized,
    after: int,
    limit: int,
    filters: Mapping[str, Any],
) -> query.EventPage:
    scoped = _scoped_filters(authorized, filters)
    flush_queue(session)
    try:
        page = query.list_events(session, after=after, limit=limit, **scoped)
    except ValueError as exc:
        raise InvalidRequest(str(exc), code="invalid_filter") from None
    record_allowed(
        session,
        authorized=authorized,
        action="audit.read",
        details={"filters": _filter_summary(scoped), "after": after, "returned": len(page.events)},
    )
    return page


def verify_chain(session: Session, *, authorized: Authorized) -> verify.VerifyResult:
    state = session.info["gateway"]
    flush_queue(session)
    result = verify.verify_chain(state.engine, public_key_pem=state.signer.public_key_pem())
    record_allowed(
        session,
        authorized=authorized,
        action="audit.verified",
        details={"ok": result.ok, "length": result.length, "first_bad_seq": result.first_bad_seq},
    )
    return result


def export_events(
    session: Session, *, authorized: Authorized, after: int, filters: Mapping[str, Any]
) -> Iterator[bytes]:
    """Records the export, then returns a generator that streams it page by page from a
    read-only transaction of its own (the request's transaction has committed by the
    time the body streams)."""
    scoped = _scoped_filters(authorized, filters)
    flush_queue(session)
    try:
        query.list_events(session, after=after, limit=1, **scoped)  # validates the filters
    except ValueError as exc:
        raise InvalidRequest(str(exc), code="invalid_filter") from None
    record_allowed(
        session,
        authorized=authorized,
        action="audit.exported",
        details={"filters": _filter_summary(scoped), "after": after},
    )
    return _stream_export(session.info["gateway"], after=after, filters=scoped)


EXPORT_PAGE = 1000


def _stream_export(state, *, after: int, filters: dict[str, Any]) -> Iterator[bytes]:
    # A read-only transaction: a WAL snapshot on SQLite, so writers are never held up.
    with Session(read_only(state.engine)) as reader:
        yield from query.export_jsonl(reader, after=after, chunk_size=EXPORT_PAGE, **filters)


def inclusion_proof(
    session: Session, *, authorized: Authorized, seq: int, tree_size: int | None
) -> dict[str, Any]:
    flush_queue(session)
    event = query.get_event(session, seq)
    if event is None or event["tenant"] != authorized.principal.tenant:
        raise NotFound(f"audit event {seq} not found", code="audit_event_not_found")
    try:
        proof = query.inclusion_proof(session, seq, tree_size)
    except LookupError as exc:
        raise InvalidRequest(str(exc), code="tree_size_out_of_range", param="tree_size") from None
    record_allowed(
        session,
        authorized=authorized,
        action="audit.proof_read",
        resource=f"audit:{seq}",
        details={"seq": seq, "tree_size": proof["tree_size"]},
    )
    return proof


def latest_checkpoint(session: Session, *, authorized: Authorized) -> Checkpoint:
    state = session.info["gateway"]
    flush_queue(session)
    checkpoint = query.latest_checkpoint(session, state.signer)
    if checkpoint is None:
        raise NotFound("the audit trail is empty", code="audit_trail_empty")
    record_allowed(
        session,
        authorized=authorized,
        action="audit.checkpoint_read",
        details={"tree_size": checkpoint.tree_size},
    )
    return checkpoint


def _filter_summary(filters: Mapping[str, Any]) -> dict[str, str]:
    # Bounded so that any legal query fits in an audit event's details.
    return {key: str(value)[:128] for key, value in sorted(filters.items())}
