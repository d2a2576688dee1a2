"""Traffic splits (canary): calls naming a production model send ``percent`` % of
themselves to a candidate of the same base model. Set by an admin, audited. Never commits.

Which calls go to the candidate is decided by the sha256 of the request id (the client's
``X-Request-ID`` when it sends a safe one, else a random one the gateway draws): the same
request id always lands on the same version, and over many requests the candidate's share
approaches ``percent``."""

from __future__ import annotations

import hashlib
import time

import structlog
from sqlmodel import Session

from gateway.audit_api.service import record_allowed
from gateway.authz import Authorized
from gateway.errors import Conflict, InvalidRequest
from gateway.inference.models import InferenceTrafficSplit
from gateway.inference.schemas import TrafficSplitSet
from gateway.registry.service import get_in_tenant

log = structlog.get_logger()

_SCALE = float(1 << 64)


def to_candidate(routing_key: str, percent: float) -> bool:
    """Whether the call keyed ``routing_key`` goes to the candidate."""
    if percent <= 0:
        return False
    if percent >= 100:
        return True
    point = int.from_bytes(hashlib.sha256(routing_key.encode()).digest()[:8], "big")
    return point / _SCALE * 100.0 < percent


def get_split(session: Session, *, tenant: str, model_id: str) -> InferenceTrafficSplit | None:
    split = session.get(InferenceTrafficSplit, model_id)
    return split if split is not None and split.tenant == tenant else None


def set_split(
    session: Session, *, authorized: Authorized, model_id: str, body: TrafficSplitSet
) -> InferenceTrafficSplit:
    """Sets (or with ``percent`` 0 or no candidate, ends) the model's canary."""
    tenant = authorized.principal.tenant
    row = get_in_tenant(session, tenant=tenant, model_id=model_id, for_update=True)
    ending = body.candidate is None or body.percent == 0
    if not ending:
        if row.status != "production" or row.deleted_at is not None:
            raise Conflict(
                "only a production model carries a traffic split",
                code="model_not_in_production",
                details={"status": row.status},
            )
        assert body.candidate is not None
        if body.candidate == row.id:
            raise InvalidRequest(
                "the candidate must be another version", code="invalid_request", param="candidate"
            )
        candidate = get_in_tenant(session, tenant=tenant, model_id=body.candidate)
        if candidate.status != "candidate" or candidate.deleted_at is not None:
            raise Conflict(
                "the canary must be a candidate version",
                code="not_candidate",
                details={"candidate": candidate.id, "status": candidate.status},
            )
        if candidate.flags:
            raise Conflict(
                "the candidate is flagged for review", code="model_flagged", param="candidate"
            )
        if candidate.base_model != row.base_model:
            raise Conflict(
                "the candidate is built on another base model",
                code="canary_base_mismatch",
                details={"model": row.base_model, "candidate": candidate.base_model},
            )
    split = session.get(InferenceTrafficSplit, model_id, with_for_update=True)
    previous = (
        None
        if split is None
        else {"candidate": split.candidate_id, "percent": f"{split.percent:g}"}
    )
    if split is None:
        split = InferenceTrafficSplit(
            model_id=row.id,
            tenant=tenant,
            reason=body.reason,
            set_by=authorized.principal.sub,
            set_at=int(time.time()),
            policy_version=authorized.policy_version,
        )
    split.candidate_id = None if ending else body.candidate
    split.percent = 0.0 if ending else body.percent
    split.reason = body.reason
    split.set_by = authorized.principal.sub
    split.set_at = int(time.time())
    split.policy_version = authorized.policy_version
    session.add(split)
    session.flush()
    record_allowed(
        session,
        authorized=authorized,
        action="model.traffic_split_set",
        details={
            "model_id": row.id,
            "candidate": split.candidate_id,
            "percent": f"{split.percent:g}",  # the trail takes no floats
            "previous": previous,
            "reason_sha256": hashlib.sha256(body.reason.encode()).hexdigest(),
        },
    )
    log.info(
        "model.traffic_split_set",
        model_id=row.id,
        candidate=split.candidate_id,
        percent=split.percent,
    )
    return split
