"""From the `model` a caller named to what is served: the governance gates of a call.
Reads only; never commits. No web framework here.

- a fine-tuned id (``ft:...``, a checkpoint's included) is looked up in the caller's
  tenant: another tenant's model is 404, exactly like one that does not exist;
- a deleted, retired or flagged version is refused (409, with the reason);
- a candidate is called only by its requester and by those who may review it (the
  policy's ``approve`` on the model: compliance officers), for evaluation;
- the purpose (default: the model's training purpose) must be one every data source the
  model was trained on is approved for;
- a production model under a traffic split sends its share of calls to the candidate
  (gateway.inference.canary); a candidate that stopped being callable is skipped and the
  production version serves;
- a registered base model is served without an adapter; a retired one is refused.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session as OrmSession
from sqlalchemy.orm import object_session

from gateway.authz import Authorized, allows
from gateway.base_models import service as base_models
from gateway.base_models.models import RegisteredBaseModel
from gateway.data_sources.models import DataSource
from gateway.errors import Conflict, Forbidden, NotFound
from gateway.inference import canary
from gateway.inference.backends.base import AdapterRef
from gateway.inference.models import InferenceModelSettings, InferenceTrafficSplit
from gateway.registry.models import ModelVersion
from gateway.registry.service import adapter_directory, get_in_tenant, is_fine_tuned
from gateway.runtime import Runtime

BASE_PURPOSE = "unspecified"
REVIEW_ACTION = "approve"


@dataclass(frozen=True)
class Target:
    """What a call is served by."""

    named: str  # what the caller asked for
    version_id: str  # what serves it (after the traffic split)
    kind: str  # fine-tuned | base
    status: str  # production | candidate | active (a base model)
    role: str  # production | candidate | canary | base
    base_model: str
    base_model_dir: str
    adapter: AdapterRef | None
    purpose: str
    keep_text_days: int | None  # the served version keeps full text this long


@dataclass(frozen=True)
class Named:
    """What resolution learnt before a refusal, for the usage row."""

    version_id: str | None = None
    base_model: str | None = None
    purpose: str | None = None


class CacheMiss(Exception):
    """A cache-only read found nothing fresh: resolve again against the database."""


# The rows resolution reads. A commit in this process that wrote one of them (ORM flush,
# ORM bulk UPDATE/DELETE, any session, any engine) bumps the generation, and a cached row
# of an older generation is not used: a retire, flag, split or purpose change made through
# this process is seen by the very next call. What another process commits is seen once
# the cached row is older than INFERENCE_RESOLVE_CACHE_SECONDS.
_WATCHED: tuple[type, ...] = (
    ModelVersion,
    RegisteredBaseModel,
    DataSource,
    InferenceTrafficSplit,
    InferenceModelSettings,
)
_CHANGED = "tunegate_resolve_rows_changed"


class _Generation:
    def __init__(self) -> None:
        self.value = 0
        self._lock = threading.Lock()

    def bump(self) -> None:
        with self._lock:
            self.value += 1


generation = _Generation()


def _written(_mapper: Any, _connection: Any, target: Any) -> None:
    session = object_session(target)
    if session is not None:
        session.info[_CHANGED] = True


for _model in _WATCHED:
    for _when in ("after_insert", "after_update", "after_delete"):
        event.listen(_model, _when, _written)


@event.listens_for(OrmSession, "do_orm_execute")
def _bulk_written(state: Any) -> None:
    mapper = state.bind_mapper
    written = state.is_update or state.is_delete
    if written and mapper is not None and issubclass(mapper.class_, _WATCHED):
        state.session.info[_CHANGED] = True


@event.listens_for(OrmSession, "after_commit")
def _committed(session: OrmSession) -> None:
    if session.info.pop(_CHANGED, False):
        generation.bump()


@event.listens_for(OrmSession, "after_soft_rollback")
def _rolled_back(session: OrmSession, _previous: Any) -> None:
    if session.info.pop(_CHANGED, False):  # a savepoint's rollback: what landed is unsure
        generation.bump()


class Reads:
    """What resolution reads, by primary key, optionally through a cache shared by the
    process (``INFERENCE_RESOLVE_CACHE_SECONDS``): with ``session`` None it reads the cache
    only and raises CacheMiss, so a fully cached call needs no worker thread and no query.
    An entry is used while it is younger than the TTL and no commit of this process
    changed a watched row since it was read (see ``generation``)."""

    MAX_ENTRIES = 10_000

    def __init__(self, session: Any, cache: dict[Any, Any] | None, ttl: float) -> None:
        self.session = session
        self.cache = cache if ttl > 0 else None
        self.ttl = ttl

    def get(self, model: type, key: str, **_: Any) -> Any:
        cache = self.cache
        if cache is not None:
            hit = cache.get((model, key))
            if (
                hit is not None
                and hit[1] == generation.value
                and time.monotonic() - hit[0] < self.ttl
            ):
                return hit[2]
        if self.session is None:
            raise CacheMiss(key)
        # taken before the read: a commit while it runs leaves the entry stale, not wrong
        seen, now = generation.value, time.monotonic()
        row = self.session.get(model, key)
        if cache is not None:
            if len(cache) >= self.MAX_ENTRIES:
                cache.clear()
            cache[(model, key)] = (now, seen, row)
        return row


class Refused(Exception):
    """A gate refused the call after the named model was found: the GatewayError to
    answer with and what was known."""

    def __init__(self, error: Exception, named: Named) -> None:
        super().__init__(str(error))
        self.error = error
        self.named = named


def _usable(row: ModelVersion) -> None:
    flags = row.flags
    if row.deleted_at is not None:
        raise Conflict(
            "the model was deleted: it is not served", code="model_deleted", param="model"
        )
    if row.status == "retired":
        raise Conflict(
            "the model is retired: it is not served", code="model_retired", param="model"
        )
    if row.flags:
        raise Conflict(
            "the model is flagged for review: it is not served until a compliance officer "
            "clears its flags",
            code="model_flagged",
            param="model",
            details={"flags": [{"reason": f.get("reason"), "ref": f.get("ref")} for f in flags]},
        )


def _may_evaluate(state: Runtime, authorized: Authorized, row: ModelVersion) -> bool:
    principal = authorized.principal
    return principal.sub == row.requested_by or allows(
        state.policy, principal, f"model:{row.id}", REVIEW_ACTION
    )


def _check_purpose(session: Any, row: ModelVersion, purpose: str) -> None:
    source_ids = sorted(
        {str(entry["data_source"]) for entry in row.data_files if entry.get("data_source")}
    )
    for source_id in source_ids:
        source = session.get(DataSource, source_id)
        if source is None:
            continue
        if purpose not in (source.allowed_purposes or []):
            raise Forbidden(
                f"purpose {purpose!r} is not one data source {source.id} was approved for",
                code="purpose_not_allowed",
                param="purpose",
                details={
                    "data_source": source.id,
                    "purpose": purpose,
                    "allowed_purposes": list(source.allowed_purposes or []),
                },
            )


def _keep_text_days(session: Any, model_id: str) -> int | None:
    settings = session.get(InferenceModelSettings, model_id)
    if settings is None or not settings.keep_text or settings.retention_days <= 0:
        return None
    return settings.retention_days


_PATHS: dict[tuple[str, str, str], str] = {}  # where models live: a function of the strings


def _base_dir(state: Runtime, name: str) -> str:
    key = ("base", str(state.settings.artifact_dir), name)
    found = _PATHS.get(key)
    if found is None:
        found = _PATHS[key] = str(base_models.model_dir(state.settings, name))
    return found


def _adapter_dir(state: Runtime, row: ModelVersion) -> str:
    """adapter_directory's answer (it resolves the path on disk: syscalls), kept once it
    answered; a directory outside the store raises every time."""
    key = ("adapter", str(state.settings.artifact_dir), row.artifact_dir)
    found = _PATHS.get(key)
    if found is None:
        if len(_PATHS) >= Reads.MAX_ENTRIES:
            _PATHS.clear()
        found = _PATHS[key] = str(adapter_directory(state.settings, row))
    return found


def _fine_tuned_target(
    session: Any, state: Runtime, *, named: str, row: ModelVersion, role: str, purpose: str
) -> Target:
    return Target(
        named=named,
        version_id=row.id,
        kind="fine-tuned",
        status=row.status,
        role=role,
        base_model=row.base_model,
        base_model_dir=_base_dir(state, row.base_model),
        adapter=AdapterRef(name=row.id, path=_adapter_dir(state, row), sha256=row.adapter_sha256),
        purpose=purpose,
        keep_text_days=_keep_text_days(session, row.id),
    )


def _canary(
    session: Any,
    state: Runtime,
    *,
    row: ModelVersion,
    purpose: str,
    routing_key: str,
) -> Target | None:
    split = session.get(InferenceTrafficSplit, row.id)
    if split is None or split.candidate_id is None or split.percent <= 0:
        return None
    if not canary.to_candidate(routing_key, split.percent):
        return None
    candidate = session.get(ModelVersion, split.candidate_id)
    if candidate is None or (candidate.tenant, candidate.base_model) != (
        row.tenant,
        row.base_model,
    ):
        return None
    try:
        _usable(candidate)
        _check_purpose(session, candidate, purpose)
    except (Conflict, Forbidden):
        return None  # the production version serves
    return _fine_tuned_target(
        session, state, named=row.id, row=candidate, role="canary", purpose=purpose
    )


def resolve(
    session: Any,
    *,
    state: Runtime,
    authorized: Authorized,
    model: str,
    purpose: str | None,
    routing_key: str,
) -> Target:
    """The target of a call, or Refused (NotFound is raised as it is: nothing was found)."""
    tenant = authorized.principal.tenant
    if not is_fine_tuned(model):
        return _base_target(session, state, model=model, purpose=purpose, tenant=tenant)
    row = get_in_tenant(session, tenant=tenant, model_id=model)
    wanted = purpose or row.purpose
    named = Named(version_id=row.id, base_model=row.base_model, purpose=wanted)
    try:
        _usable(row)
        if row.status == "candidate" and not _may_evaluate(state, authorized, row):
            raise Forbidden(
                "a candidate model is called only by its requester and its reviewers, for "
                "evaluation, until it is promoted",
                code="model_not_callable",
                param="model",
                details={"status": row.status},
            )
        _check_purpose(session, row, wanted)
    except (Conflict, Forbidden) as exc:
        raise Refused(exc, named) from None
    if row.status == "production":
        chosen = _canary(session, state, row=row, purpose=wanted, routing_key=routing_key)
        if chosen is not None:
            return chosen
    return _fine_tuned_target(session, state, named=model, row=row, role=row.status, purpose=wanted)


def _base_target(
    session: Any, state: Runtime, *, model: str, purpose: str | None, tenant: str
) -> Target:
    row: Any = session.get(RegisteredBaseModel, model)
    if row is None or not base_models.visible_in(row, tenant):  # another tenant's own: absent
        raise NotFound(f"model {model!r} not found", code="model_not_found", param="model")
    wanted = purpose or BASE_PURPOSE
    if row.status != "active":
        raise Refused(
            Conflict(
                "the base model is retired: it is not served", code="model_retired", param="model"
            ),
            Named(version_id=model, base_model=model, purpose=wanted),
        )
    return Target(
        named=model,
        version_id=model,
        kind="base",
        status="active",
        role="base",
        base_model=model,
        base_model_dir=_base_dir(state, model),
        adapter=None,
        purpose=wanted,
        keep_text_days=_keep_text_days(session, model),
    )
