"""Proposing, approving and revoking data sources. Never commits.

Approval classifies the source in the policy (`g2, ds:<id>, class:<label>`), which is what
lets class-level rules (e.g. "ml-engineers never train on class:restricted") reach it;
revocation takes that link out. Both are policy changes with their own policy version,
made before the audit append (the policy store's lock is taken first, always)."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from audit.encoding import now_ts
from gateway.audit_api.service import record_allowed
from gateway.authz import Authorized, allows
from gateway.data_sources.models import DataSource
from gateway.data_sources.schemas import DATA_SOURCE_ID, DataSourceCreate
from gateway.db import after_commit
from gateway.errors import Conflict, NotFound
from gateway.pagination import visible_page
from gateway.policies_api.service import policy_error
from gateway.registry.service import flag_models
from gateway.runtime import Runtime
from policies import store
from policies.vocabulary import PolicyError, Rule

# A listing shows what a direct read (GET /v1/data_sources/{id}, which needs "read")
# would show, no more.
VISIBLE_WITH = "read"


def new_data_source_id() -> str:
    return f"ds-{secrets.token_hex(8)}"


def _policy_object(data_source_id: str) -> str:
    return f"ds:{data_source_id}"


def _class_link(source: DataSource) -> Rule:
    return Rule.g2(_policy_object(source.id), f"class:{source.classification}")


def get_in_tenant(
    session: Session, *, tenant: str, data_source_id: str, for_update: bool = False
) -> DataSource:
    source = None
    if DATA_SOURCE_ID.match(data_source_id):
        source = session.get(DataSource, data_source_id, with_for_update=for_update)
    if source is None or source.tenant != tenant:
        raise NotFound(f"data source {data_source_id!r} not found", code="data_source_not_found")
    return source


def propose(session: Session, *, authorized: Authorized, body: DataSourceCreate) -> DataSource:
    principal = authorized.principal
    taken = session.scalars(
        select(col(DataSource.id)).where(
            col(DataSource.tenant) == principal.tenant, col(DataSource.name) == body.name
        )
    ).first()
    if taken is not None:
        raise Conflict(
            f"a data source named {body.name!r} exists", code="data_source_exists", param="name"
        )
    source = DataSource(
        id=new_data_source_id(),
        tenant=principal.tenant,
        status="proposed",
        proposed_by=principal.sub,
        proposed_at=now_ts(),
        **body.model_dump(mode="json"),
    )
    try:
        with session.begin_nested():  # a concurrent proposal of the same name loses here
            session.add(source)
            session.flush()
    except IntegrityError:
        raise Conflict(
            f"a data source named {body.name!r} exists", code="data_source_exists", param="name"
        ) from None
    record_allowed(
        session,
        authorized=authorized,
        action="data_source.proposed",
        resource=_policy_object(source.id),
        details={
            "name": source.name,
            "classification": source.classification,
            "contains_personal_data": source.contains_personal_data,
            "legal_basis": source.legal_basis,
            "allowed_purposes": source.allowed_purposes,
            "owner": source.owner,
            "retention_days": source.retention_days,
            "pii_action": source.pii_action,
            "min_examples": source.min_examples,
            # the trail takes no floats: their repr
            "max_conflict_rate": None
            if source.max_conflict_rate is None
            else repr(source.max_conflict_rate),
            "overlap_threshold": repr(source.overlap_threshold),
            "max_overlapping_lines": source.max_overlapping_lines,
            "transfers": source.transfers,
        },
    )
    return source


def _change_policy(
    session: Session,
    *,
    state: Runtime,
    authorized: Authorized,
    add: Sequence[Rule] = (),
    remove: Sequence[Rule] = (),
    reason: str,
) -> store.PolicyVersionInfo:
    try:
        version = store.change_rules(
            session, actor=authorized.principal.subject, add=add, remove=remove, reason=reason
        )
    except PolicyError as exc:
        raise policy_error(exc) from None
    after_commit(session, state.refresh_policy)
    return version


def approve(
    session: Session, *, state: Runtime, authorized: Authorized, data_source_id: str
) -> DataSource:
    principal = authorized.principal
    source = get_in_tenant(
        session, tenant=principal.tenant, data_source_id=data_source_id, for_update=True
    )
    if source.status != "proposed":
        raise Conflict(f"data source is {source.status}, not proposed", code="not_proposed")
    if source.proposed_by == principal.sub:
        raise Conflict(
            "four eyes: whoever proposed a data source cannot approve it",
            code="four_eyes_violation",
        )
    version = _change_policy(
        session,
        state=state,
        authorized=authorized,
        add=[_class_link(source)],
        reason=f"data source {source.id} approved",
    )
    source.status = "approved"
    source.approved_by = principal.sub
    source.approved_at = now_ts()
    source.approval_policy_version = version.hash
    session.add(source)
    session.flush()
    record_allowed(
        session,
        authorized=authorized,
        action="data_source.approved",
        details={
            "proposed_by": source.proposed_by,
            "classification": source.classification,
            "new_policy_version": version.hash,
        },
    )
    return source


def revoke(
    session: Session, *, state: Runtime, authorized: Authorized, data_source_id: str, reason: str
) -> DataSource:
    principal = authorized.principal
    source = get_in_tenant(
        session, tenant=principal.tenant, data_source_id=data_source_id, for_update=True
    )
    if source.status == "revoked":
        raise Conflict("data source is already revoked", code="already_revoked")
    new_version = None
    if source.status == "approved":
        new_version = _change_policy(
            session,
            state=state,
            authorized=authorized,
            remove=[_class_link(source)],
            reason=f"data source {source.id} revoked",
        ).hash
    source.status = "revoked"
    source.revoked_by = principal.sub
    source.revoked_at = now_ts()
    source.revoke_reason = reason
    session.add(source)
    session.flush()
    record_allowed(
        session,
        authorized=authorized,
        action="data_source.revoked",
        # The reason is free text and may name people: the trail keeps its hash; the
        # text itself stays on the data source row, which erasure can reach.
        details={
            "reason_sha256": hashlib.sha256(reason.encode()).hexdigest(),
            "new_policy_version": new_version,
        },
    )
    flag_models(
        session,
        tenant=principal.tenant,
        data_source_id=source.id,
        reason="data_source_revoked",
        ref=source.id,
        authorized=authorized,
    )
    return source


def get_visible(session: Session, *, authorized: Authorized, data_source_id: str) -> DataSource:
    return get_in_tenant(session, tenant=authorized.principal.tenant, data_source_id=data_source_id)


def list_visible(
    session: Session,
    *,
    state: Runtime,
    authorized: Authorized,
    status: str | None,
    after: str | None,
    limit: int,
) -> tuple[list[DataSource], str | None]:
    """The tenant's sources the caller may read, in id order."""
    principal = authorized.principal
    query = select(DataSource).where(col(DataSource.tenant) == principal.tenant)
    if status is not None:
        query = query.where(col(DataSource.status) == status)
    page, more = visible_page(
        session,
        query,
        keys=[col(DataSource.id)],
        after=None if after is None else [after],
        visible=lambda source: allows(
            state.policy, principal, _policy_object(source.id), VISIBLE_WITH
        ),
        limit=limit,
    )
    return page, (page[-1].id if more else None)


# --- gates -----------------------------------------------------------------------------------


def require_usable(source: DataSource) -> None:
    """Nothing new is uploaded to a source that is not approved (a job has its own gate,
    gateway.jobs.gates.source_approved, checked again when the job is written)."""
    if source.status != "approved":
        raise Conflict(
            f"data source {source.id} is {source.status}, not approved",
            code="data_source_not_approved",
            details={"data_source": source.id, "status": source.status},
        )
