"""Audit events written by workers: queued with chain.enqueue in the worker's transaction
(a worker has no GatewayState), chained by the gateway's sequencer within a second."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlmodel import Session

from audit import chain

WORKER_ACTOR = "system:worker"


def record_worker_event(
    session: Session,
    *,
    tenant: str,
    action: str,
    resource: str,
    details: Mapping[str, Any],
) -> int:
    """Ids, hashes and codes only in ``details``: the chain is permanent."""
    return chain.enqueue(
        session,
        actor=WORKER_ACTOR,
        tenant=tenant,
        action=action,
        resource=resource,
        decision="allow",
        policy_version=None,
        details=details,
    )
