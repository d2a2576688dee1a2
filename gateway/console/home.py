""" "Waiting for me": what a person's roles let them act on, each found by the same service
and the same policy check as the API route that lists it."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from sqlmodel import Session

from gateway.authz import Authorized, allows, decide
from gateway.data_sources import service as data_sources
from gateway.erasure import service as erasure
from gateway.jobs import service as jobs
from gateway.registry import promotions
from gateway.registry import service as registry
from gateway.registry.models import ModelVersion
from gateway.retention import service as retention
from gateway.runtime import Runtime
from gateway.security import Principal

SHOWN = 5
SCANNED = 100
FAILED = frozenset({"failed", "cancelled"})


@dataclass
class Panel:
    title: str
    href: str
    count: int
    more: bool = False
    items: list[tuple[str, str]] = field(default_factory=list)


def _allowed(state: Runtime, principal: Principal, obj: str, act: str) -> Authorized | None:
    outcome = decide(state.policy, principal, obj, act, route="/console", method="GET")
    return outcome if isinstance(outcome, Authorized) else None


def waiting_for(session: Session, *, state: Runtime, principal: Principal) -> list[Panel]:
    panels = [
        _sources_to_approve(session, state, principal),
        _promotions_to_approve(session, state, principal),
        _erasures_to_decide(session, state, principal),
        _my_failed_jobs(session, state, principal),
        _flagged_models(session, state, principal),
        _degraded_models(session, state, principal),
        _retention_due(session, state, principal),
    ]
    return [panel for panel in panels if panel is not None]


def _sources_to_approve(session: Session, state: Runtime, principal: Principal) -> Panel | None:
    authorized = _allowed(state, principal, "ds:*", "approve")
    if authorized is None:
        return None
    rows, after = data_sources.list_visible(
        session, state=state, authorized=authorized, status="proposed", after=None, limit=SCANNED
    )
    # Four eyes: a person's own proposals are not waiting for them.
    rows = [row for row in rows if row.owner != principal.sub]
    return Panel(
        "Data sources to approve",
        "/console/data-sources?status=proposed",
        len(rows),
        after is not None,
        [(f"{row.name} ({row.id})", f"/console/data-sources/{row.id}") for row in rows[:SHOWN]],
    )


def _promotions_to_approve(session: Session, state: Runtime, principal: Principal) -> Panel | None:
    """Pending requests the person may approve: listed as GET /v1/promotion_requests lists
    them (model:* list), for whoever may approve promotions (model:* approve)."""
    if _allowed(state, principal, "model:*", "approve") is None:
        return None
    authorized = _allowed(state, principal, "model:*", "list")
    if authorized is None:
        return None
    rows, more = promotions.list_visible(
        session,
        state=state,
        authorized=authorized,
        model_id=None,
        status="pending",
        after=None,
        limit=SCANNED,
    )
    # Four eyes: a request a person asked for, or for a model they trained, is not theirs.
    rows = [
        row
        for row in rows
        if principal.sub not in (row.requested_by, row.trained_by)
        and allows(state.policy, principal, registry.policy_object(row.model_id), "approve")
    ]
    return Panel(
        "Promotions to approve",
        "/console/models?status=candidate",
        len(rows),
        more,
        [(f"{row.model_id} ({row.id})", f"/console/models/{row.model_id}") for row in rows[:SHOWN]],
    )


def _erasures_to_decide(session: Session, state: Runtime, principal: Principal) -> Panel | None:
    authorized = _allowed(state, principal, "erasure:*", "decide")
    if authorized is None:
        return None
    rows, after = erasure.list_in_tenant(
        session, authorized=authorized, status="open", after=None, limit=SCANNED
    )
    return Panel(
        "Erasure requests to decide",
        "/console/erasure?status=open",
        len(rows),
        after is not None,
        [(row.id, f"/console/erasure/{row.id}") for row in rows[:SHOWN]],
    )


def _my_failed_jobs(session: Session, state: Runtime, principal: Principal) -> Panel | None:
    authorized = _allowed(state, principal, "job:*", "list")
    if authorized is None:
        return None
    rows, more = jobs.list_visible(
        session, state=state, authorized=authorized, after=None, limit=SCANNED, metadata={}
    )
    mine = [row for row in rows if row.created_by == principal.sub and row.status in FAILED]
    return Panel(
        "My failed or cancelled jobs",
        "/console/jobs?mine=1",
        len(mine),
        more,
        [(f"{row.id} ({row.status})", f"/console/jobs/{row.id}") for row in mine[:SHOWN]],
    )


def _flagged_models(session: Session, state: Runtime, principal: Principal) -> Panel | None:
    authorized = _allowed(state, principal, "model:*", "list")
    if authorized is None:
        return None
    rows, after = registry.list_visible(
        session,
        state=state,
        authorized=authorized,
        status=None,
        flagged=True,
        after=None,
        limit=SCANNED,
    )
    flagged = [row for row in rows if isinstance(row, ModelVersion)]  # base models never are
    return Panel(
        "Flagged models",
        "/console/models?flagged=1",
        len(flagged),
        after is not None,
        [(row.id, f"/console/models/{row.id}") for row in flagged[:SHOWN]],
    )


def _degraded_summary(row: ModelVersion) -> str:
    """The numbers of the model's newest `degraded` flag, e.g. "token_f1 0.62 → 0.10"."""
    flag = next(f for f in reversed(row.flags) if f.get("reason") == "degraded")
    parts = [
        f"{m.get('name')} {m.get('at_promotion', 0):.3g} → {m.get('now', 0):.3g}"
        for m in flag.get("metrics") or []
    ]
    ood = flag.get("ood_probe")
    if isinstance(ood, dict):
        parts.append(f"OOD loss {ood.get('at_promotion', 0):.3g} → {ood.get('now', 0):.3g}")
    return ", ".join(parts)


def _degraded_models(session: Session, state: Runtime, principal: Principal) -> Panel | None:
    """Versions a re-evaluation after release flagged `degraded`, for whoever may
    re-evaluate models (model:* evaluate): to review, retire or clear the flag."""
    if _allowed(state, principal, "model:*", "evaluate") is None:
        return None
    authorized = _allowed(state, principal, "model:*", "list")
    if authorized is None:
        return None
    rows, after = registry.list_visible(
        session,
        state=state,
        authorized=authorized,
        status=None,
        flagged=True,
        after=None,
        limit=SCANNED,
    )
    degraded = [
        row
        for row in rows
        if isinstance(row, ModelVersion) and any(f.get("reason") == "degraded" for f in row.flags)
    ]
    return Panel(
        "Models degraded after release",
        "/console/models?flagged=1",
        len(degraded),
        after is not None,
        [
            (f"{row.id} ({_degraded_summary(row)})", f"/console/models/{row.id}")
            for row in degraded[:SHOWN]
        ],
    )


def _retention_due(session: Session, state: Runtime, principal: Principal) -> Panel | None:
    """Files of the sources the person owns whose content retention deletes soon
    (gateway.retention; the API's GET /v1/retention/warnings, ds:* list)."""
    if _allowed(state, principal, "ds:*", "list") is None:
        return None
    due, more = retention.warnings_for(
        session, tenant=principal.tenant, owner=principal.sub, limit=SCANNED
    )
    if not due:
        return None
    return Panel(
        "Files due for deletion (retention)",
        "/console/data-sources",
        len(due),
        more,
        [
            (
                f"{item.filename} ({item.file_id}) in {item.data_source_name}: deleted after "
                f"{time.strftime('%Y-%m-%d', time.gmtime(item.delete_after))}",
                f"/console/data-sources/{item.data_source_id}",
            )
            for item in due[:SHOWN]
        ],
    )
