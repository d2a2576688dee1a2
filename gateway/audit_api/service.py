"""The audit service: recording events on behalf of the other services, and the governed
reads of the trail. Never commits the request's transaction; a refusal, whose request is
about to roll back, is recorded in a transaction of its own."""

from __future__ import annotations

import base64
import json
import queue
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, NoReturn

import structlog
from sqlmodel import Session

from audit import chain, query, verify
from audit.checkpoints import Checkpoint, CheckpointError, Signer
from audit.export_proof import export_with_proof
from audit.offline import TlogProof
from audit.verify_progress import verify_chain_reporting
from gateway import metrics
from gateway.authz import Authorized, refusal
from gateway.db import read_only
from gateway.errors import InvalidRequest, NotFound
from gateway.runtime import Runtime
from gateway.security import Principal
from gateway.witness.cosignatures import with_cosignatures
from policies.enforcer import Decision

log = structlog.get_logger()

# Set on a session that queued events: its owner wakes the sequencer once it commits
# (gateway.deps.get_session for a request's session).
EVENTS_QUEUED = "audit_events_queued"


# --- recording ----------------------------------------------------------------------------


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
    session.info[EVENTS_QUEUED] = True
    metrics.AUDIT_EVENTS.inc()
    return queued


def record_allowed(
    session: Session,
    *,
    authorized: Authorized,
    action: str,
    resource: str | None = None,
    details: Mapping[str, Any] | None = None,
) -> int:
    """The audit event of a governed change, carrying the decision that allowed it."""
    event = allowed_event(authorized=authorized, action=action, resource=resource, details=details)
    return record(session, **event)


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


def deny(
    state: Runtime,
    *,
    principal: Principal,
    obj: str,
    act: str,
    decision: Decision,
    route: str,
    method: str,
) -> NoReturn:
    """The one way a policy denial ends: recorded (with the policy version that decided),
    then raised as the 403 the caller gets. Call it with no write transaction open: on
    SQLite the recording needs the write lock."""
    record_denial(
        state, principal=principal, obj=obj, act=act, decision=decision, route=route, method=method
    )
    raise refusal(decision, principal=principal, obj=obj, act=act)


def record_denial(
    state: Runtime,
    *,
    principal: Principal,
    obj: str,
    act: str,
    decision: Decision,
    route: str,
    method: str,
) -> None:
    """A denial (or an error while deciding), audited in a transaction of its own: the
    request's transaction is about to roll back with the refusal."""
    details = {"route": route, "method": method, "act": act}
    if decision.error is not None:
        details["error"] = decision.error
    _record_alone(
        state,
        "audit.denial_not_recorded",
        actor=principal.sub,
        tenant=principal.tenant,
        action="authz.denied",
        resource=obj if decision.error is None else "invalid-request",
        decision=decision.outcome,
        policy_version=decision.policy_version or None,
        details=details,
    )


def record_refusal(
    state: Runtime, *, principal: Principal, action: str, resource: str, details: dict
) -> None:
    """A governance gate's refusal, audited in a transaction of its own (the request's is
    about to roll back). ``details`` carry the gate's code and figures."""
    _record_alone(
        state,
        "audit.refusal_not_recorded",
        actor=principal.sub,
        tenant=principal.tenant,
        action=action,
        resource=resource,
        decision="deny",
        details=details,
    )


def _record_alone(state: Runtime, failure: str, **event: Any) -> None:
    # The refusal stands whether or not it could be recorded; the log says which.
    try:
        with Session(state.engine) as session:
            record(session, **event)
            session.commit()
        state.notify_sequencer()
    except Exception:
        log.exception(failure, action=event["action"], resource=event["resource"])


def flush_queue(state: Runtime) -> None:
    """Chains everything committed so far, so that a reader sees their own writes. Runs
    before the request's session has touched the database: on SQLite the request's
    transaction would otherwise hold the write lock that chaining needs."""
    state.flush_audit_queue()


# --- the governed reads of the trail ------------------------------------------------------


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
    state: Runtime,
    authorized: Authorized,
    after: int,
    limit: int,
    filters: Mapping[str, Any],
) -> query.EventPage:
    scoped = _scoped_filters(authorized, filters)
    flush_queue(state)
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


def verify_chain(
    session: Session, *, state: Runtime, authorized: Authorized
) -> verify.VerifyResult:
    flush_queue(state)
    result = verify.verify_chain(state.engine, public_key_pem=state.signer.public_key_pem())
    record_allowed(
        session,
        authorized=authorized,
        action="audit.verified",
        details={"ok": result.ok, "length": result.length, "first_bad_seq": result.first_bad_seq},
    )
    return result


def export_events(
    session: Session,
    *,
    state: Runtime,
    authorized: Authorized,
    after: int,
    filters: Mapping[str, Any],
) -> Iterator[bytes]:
    """Records the export, then returns a generator that streams it page by page from a
    read-only transaction of its own (the request's transaction has committed by the
    time the body streams)."""
    scoped = _scoped_filters(authorized, filters)
    flush_queue(state)
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
    return _stream_export(state, after=after, filters=scoped)


EXPORT_PAGE = 1000
PROVEN_EXPORT_PAGE = 5000  # its lines come written by the database: bigger pages pay


def _stream_export(state: Runtime, *, after: int, filters: dict[str, Any]) -> Iterator[bytes]:
    # A read-only transaction: a WAL snapshot on SQLite, so writers are never held up.
    with Session(read_only(state.engine)) as reader:
        yield from query.export_jsonl(reader, after=after, chunk_size=EXPORT_PAGE, **filters)


@dataclass(frozen=True)
class ProvenExport:
    """An export that ends with its proof: the checkpoint it is proven under bounds it."""

    tree_size: int
    lines: Iterator[bytes]


def export_events_proven(
    session: Session,
    *,
    state: Runtime,
    authorized: Authorized,
    after: int,
    filters: Mapping[str, Any],
) -> ProvenExport:
    """export_events, up to a signed checkpoint (signed now if none covers the head) and
    ending with the trailer that proves the events under it (audit.export_proof), so
    `tunegate audit verify-export` can check the file with only the public key."""
    scoped = _scoped_filters(authorized, filters)
    flush_queue(state)
    try:
        query.list_events(session, after=after, limit=1, **scoped)  # validates the filters
    except ValueError as exc:
        raise InvalidRequest(str(exc), code="invalid_filter") from None
    checkpoint = query.latest_checkpoint(session, state.signer)
    if checkpoint is None or checkpoint.tree_size == 0:
        raise NotFound("the audit trail is empty", code="audit_trail_empty")
    record_allowed(
        session,
        authorized=authorized,
        action="audit.exported",
        details={
            "filters": _filter_summary(scoped),
            "after": after,
            "proven_under_tree_size": checkpoint.tree_size,
        },
    )
    return ProvenExport(
        tree_size=checkpoint.tree_size,
        lines=_stream_proven_export(state, checkpoint, after=after, filters=scoped),
    )


def _stream_proven_export(
    state: Runtime, checkpoint: Checkpoint, *, after: int, filters: dict[str, Any]
) -> Iterator[bytes]:
    def read() -> Iterator[bytes]:
        with Session(read_only(state.engine)) as reader:
            yield from export_with_proof(
                reader, checkpoint=checkpoint, after=after, chunk_size=PROVEN_EXPORT_PAGE, **filters
            )

    return _read_ahead(read, depth=READ_AHEAD_CHUNKS)


READ_AHEAD_CHUNKS = 4
_DONE = object()


def _read_ahead(produce: Callable[[], Iterator[bytes]], *, depth: int) -> Iterator[bytes]:
    """The chunks of ``produce()``, read by a thread of their own up to ``depth`` chunks
    ahead: the database is read while the previous chunks are being sent, instead of
    in turn with them. Closing the returned iterator (the client went away) stops the
    reading thread at its next chunk; an error in it is raised here."""
    chunks: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def run() -> None:
        try:
            for chunk in produce():
                while not stop.is_set():
                    try:
                        chunks.put(chunk, timeout=0.5)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            chunks.put(_DONE)
        except BaseException as exc:  # handed to the reader, who raises it
            chunks.put(exc)

    threading.Thread(target=run, name="audit-export", daemon=True).start()
    return _drain(chunks, stop)


def _drain(chunks: queue.Queue[Any], stop: threading.Event) -> Iterator[bytes]:
    try:
        while (chunk := chunks.get()) is not _DONE:
            if isinstance(chunk, BaseException):
                raise chunk
            yield chunk
    finally:
        stop.set()


def verification_events(updates: Iterator[dict[str, Any]]) -> Iterator[dict[str, str]]:
    """verify_with_progress's updates as server-sent events: `progress`, then `result` (or
    `error`), each with its JSON; what the API's stream and the console's page both send."""
    for update in updates:
        kind = "progress" if "checked" in update else "result" if "result" in update else "error"
        yield {"event": kind, "data": json.dumps(update.get("result", update))}


def verify_with_progress(state: Runtime, *, authorized: Authorized) -> Iterator[dict[str, Any]]:
    """verify_chain, reported while it runs: ``{"checked", "total"}`` items (the first as
    soon as the snapshot is read), then the verdict as ``{"result": {...}}``, or
    ``{"error": {...}}``. The verification runs in a thread of its own and finishes, and
    is audited (in a transaction of its own: the request's has ended by then), even when
    the caller stops listening."""
    flush_queue(state)
    updates: queue.Queue[dict[str, Any]] = queue.Queue()
    thread = threading.Thread(
        target=_verify_reporting, args=(state, authorized, updates), name="audit-verify"
    )
    thread.daemon = True
    thread.start()
    return _progress_updates(updates)


def _verify_reporting(
    state: Runtime, authorized: Authorized, updates: queue.Queue[dict[str, Any]]
) -> None:
    try:
        result = verify_chain_reporting(
            state.engine,
            report=lambda checked, total: updates.put({"checked": checked, "total": total}),
            public_key_pem=state.signer.public_key_pem(),
        )
    except Exception:
        log.exception("audit.verify_failed")
        updates.put({"error": {"code": "internal_error", "message": "verification failed"}})
        return
    _record_alone(
        state,
        "audit.verification_not_recorded",
        **allowed_event(
            authorized=authorized,
            action="audit.verified",
            details={
                "ok": result.ok,
                "length": result.length,
                "first_bad_seq": result.first_bad_seq,
                "streamed": True,
            },
        ),
    )
    log.info("audit.verified", ok=result.ok, length=result.length)
    updates.put({"result": result.to_dict()})


def _progress_updates(updates: queue.Queue[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """The updates in order; of progress that queued up meanwhile, only the newest."""
    while True:
        update = updates.get()
        while "checked" in update and not updates.empty():
            update = updates.get()
        yield update
        if "checked" not in update:
            return


def inclusion_proof(
    session: Session, *, state: Runtime, authorized: Authorized, seq: int, tree_size: int | None
) -> dict[str, Any]:
    flush_queue(state)
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


def latest_checkpoint(
    session: Session, *, state: Runtime, authorized: Authorized
) -> dict[str, Any]:
    """The newest checkpoint (signed now if none covers the head) as the console's JSON,
    with its C2SP signed note."""
    checkpoint = _latest(session, state=state, authorized=authorized, served_as="json")
    return {**checkpoint.to_json(), "signed_note": checkpoint_note(session, state, checkpoint)}


def latest_checkpoint_note(session: Session, *, state: Runtime, authorized: Authorized) -> str:
    """The newest checkpoint as a C2SP tlog-checkpoint signed note."""
    checkpoint = _latest(session, state=state, authorized=authorized, served_as="note")
    return checkpoint_note(session, state, checkpoint)


def _latest(
    session: Session, *, state: Runtime, authorized: Authorized, served_as: str
) -> Checkpoint:
    flush_queue(state)
    checkpoint = query.latest_checkpoint(session, state.signer)
    if checkpoint is None:
        raise NotFound("the audit trail is empty", code="audit_trail_empty")
    record_allowed(
        session,
        authorized=authorized,
        action="audit.checkpoint_read",
        details={"tree_size": checkpoint.tree_size, "as": served_as},
    )
    return checkpoint


@lru_cache(maxsize=8)
def _with_origin(signer: Signer, origin: str, key_name: str | None) -> Signer:
    return signer.with_origin(origin, key_name)


def note_signer(state: Runtime) -> Signer:
    """The audit key, issuing notes under the configured origin and key name."""
    settings = state.settings
    return _with_origin(state.signer, settings.audit_origin, settings.audit_key_name)


def checkpoint_note(session: Session, state: Runtime, checkpoint: Checkpoint) -> str:
    """The one place a stored checkpoint becomes the signed note the gateway serves, with
    the cosignatures its witnesses returned (gateway.witness). Raises a 500-class error,
    never a re-signature, when the stored row no longer verifies."""
    try:
        note = note_signer(state).checkpoint_note(checkpoint)
        return with_cosignatures(session, note, checkpoint.tree_size, checkpoint.root_hash)
    except CheckpointError:
        log.error("audit.checkpoint_unverifiable", tree_size=checkpoint.tree_size)
        raise


def checkpoint_history(
    session: Session, *, state: Runtime, authorized: Authorized, after: int, limit: int
) -> tuple[list[dict[str, Any]], int | None]:
    """The signed notes of the stored checkpoints by the gateway's key, oldest first, a
    keyset page after checkpoint id ``after``: (items, next cursor or None)."""
    flush_queue(state)
    checkpoints, ids, more = query.checkpoints_after(
        session, after=after, limit=limit, key_id=state.signer.key_id
    )
    items = [
        {
            "id": row_id,
            "tree_size": checkpoint.tree_size,
            "root_hash": base64.b64encode(checkpoint.root_hash).decode("ascii"),
            "ts": checkpoint.ts,
            "note": checkpoint_note(session, state, checkpoint),
        }
        for row_id, checkpoint in zip(ids, checkpoints, strict=True)
    ]
    record_allowed(
        session,
        authorized=authorized,
        action="audit.checkpoints_read",
        details={"after": after, "returned": len(items)},
    )
    return items, (ids[-1] if more else None)


def consistency_proof(
    session: Session, *, state: Runtime, authorized: Authorized, first: int, second: int | None
) -> dict[str, Any]:
    """An RFC 6962 consistency proof between two tree sizes (second: the current size when
    not given), read off the stored tree, base64."""
    flush_queue(state)
    try:
        proof = query.consistency(session, first, second)
    except LookupError as exc:
        param = "second" if str(exc).startswith("second") else "first"
        raise InvalidRequest(str(exc), code="tree_size_out_of_range", param=param) from None
    record_allowed(
        session,
        authorized=authorized,
        action="audit.consistency_read",
        details={"first": proof["first"], "second": proof["second"]},
    )

    def b64(value: bytes) -> str:
        return base64.b64encode(value).decode("ascii")

    return {
        "format": "tunegate-consistency-proof/v1",
        "first": proof["first"],
        "second": proof["second"],
        "first_root": b64(proof["first_root"]),
        "second_root": b64(proof["second_root"]),
        "hashes": [b64(h) for h in proof["hashes"]],
    }


def inclusion_tlog_proof(
    session: Session, *, state: Runtime, authorized: Authorized, seq: int, tree_size: int | None
) -> str:
    """A c2sp.org/tlog-proof of event ``seq``: its index, the inclusion hashes and the
    checkpoint note of ``tree_size`` events (default: the newest checkpoint, signed now
    if none covers the head). The extra line carries the event body."""
    flush_queue(state)
    if tree_size is None:
        checkpoint = query.latest_checkpoint(session, state.signer)
    else:
        checkpoint = query.checkpoint_at(session, tree_size)
        if checkpoint is not None and checkpoint.key_id != state.signer.key_id:
            checkpoint = None
    if checkpoint is None:
        if tree_size is None:
            raise NotFound("the audit trail is empty", code="audit_trail_empty")
        raise NotFound(
            f"no checkpoint of {tree_size} events was signed: leave tree_size out for the "
            "newest, or take a size from GET /v1/audit/checkpoints",
            code="audit_checkpoint_not_found",
            param="tree_size",
        )
    proof = inclusion_proof(
        session, state=state, authorized=authorized, seq=seq, tree_size=checkpoint.tree_size
    )
    return TlogProof(
        index=proof["leaf_index"],
        hashes=tuple(bytes.fromhex(h) for h in proof["hashes"]),
        checkpoint=checkpoint_note(session, state, checkpoint),
        extra=proof["body"].encode("utf-8"),
    ).text()


def _filter_summary(filters: Mapping[str, Any]) -> dict[str, str]:
    # Bounded so that any legal query fits in an audit event's details.
    return {key: str(value)[:128] for key, value in sorted(filters.items())}


def get_event(session: Session, *, state: Runtime, authorized: Authorized, seq: int) -> dict:
    """One event of the caller's tenant, with its hashes; reading it is itself recorded."""
    flush_queue(state)
    event = query.get_event(session, seq)
    if event is None or event.get("tenant") != authorized.principal.tenant:
        raise NotFound(f"no audit event {seq}", code="audit_event_not_found", param="seq")
    record_allowed(session, authorized=authorized, action="audit.read", details={"seq": seq})
    return event
