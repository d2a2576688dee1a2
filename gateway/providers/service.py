"""Registering, listing and retiring external fine-tuning providers, and the export
decision: may a principal send a data source's data to a provider. Never commits.

Sending data out is its own policy action: `export` must be allowed on the data source
(`ds:<id>`, so class rules reach it through `g2`) and on the provider
(`provider:<name>`). Then the gates: the provider is active, the source is approved, its
classification does not forbid every export (`restricted` does), and a source that holds
personal data names, in its transfer records, a region the provider processes data in on a
legal basis (GDPR Art. 30(1)(e): the same records list the transfers). The decision is
recorded with the policy version that made it; the federated executor asks the same
`check_export`."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any

import structlog
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from gateway.audit_api.service import record, record_allowed
from gateway.authz import Authorized, allows, decide, refusal
from gateway.base_models.models import RegisteredBaseModel
from gateway.data_sources import service as data_sources
from gateway.data_sources.models import DataSource
from gateway.data_sources.schemas import PROVIDER_NAME
from gateway.errors import Conflict, Forbidden, GatewayError, NotFound
from gateway.pagination import visible_page
from gateway.providers.credentials import credential_dirs, read_secret
from gateway.providers.decisions import ExportDecision, ExportRefusal
from gateway.providers.models import Provider, ProviderModel, ProviderView
from gateway.providers.schemas import ProviderCreate
from gateway.runtime import Runtime
from gateway.security import Principal
from policies.enforcer import PolicyEngine

log = structlog.get_logger()

VISIBLE_WITH = "read"
EXPORT = "export"
#: classifications whose data never leaves, whatever the policy allows
NO_EXPORT_CLASSIFICATIONS = frozenset({"restricted"})
# Both export decisions are made on one policy version; a reload between them is retried.
POLICY_VERSION_TRIES = 3


def policy_object(name: str) -> str:
    return f"provider:{name}"


# --- reading ----------------------------------------------------------------------------


def get(session: Session, *, name: str, for_update: bool = False) -> Provider:
    row = None
    if PROVIDER_NAME.match(name):
        row = session.get(Provider, name, with_for_update=for_update)
    if row is None:
        raise NotFound(f"provider {name!r} not found", code="provider_not_found")
    return row


def _views(session: Session, rows: Sequence[Provider]) -> list[ProviderView]:
    names = [row.name for row in rows]
    offered: dict[str, list[ProviderModel]] = {name: [] for name in names}
    if names:
        query = (
            select(ProviderModel)
            .where(col(ProviderModel.provider).in_(names))
            .order_by(col(ProviderModel.name))
        )
        for model in session.exec(query).all():
            offered[model.provider].append(model)
    return [ProviderView(row, offered[row.name]) for row in rows]


def get_visible(session: Session, *, authorized: Authorized, name: str) -> ProviderView:
    [view] = _views(session, [get(session, name=name)])
    return view


def list_visible(
    session: Session,
    *,
    state: Runtime,
    authorized: Authorized,
    status: str | None,
    after: str | None,
    limit: int,
) -> tuple[list[ProviderView], str | None]:
    """Providers the caller may read, in name order."""
    principal = authorized.principal
    query = select(Provider)
    if status is not None:
        query = query.where(col(Provider.status) == status)
    page, more = visible_page(
        session,
        query,
        keys=[col(Provider.name)],
        after=None if after is None else [after],
        visible=lambda row: allows(state.policy, principal, policy_object(row.name), VISIBLE_WITH),
        limit=limit,
    )
    return _views(session, page), (page[-1].name if more else None)


def active_providers(session: Session) -> list[Provider]:
    query = select(Provider).where(col(Provider.status) == "active").order_by(col(Provider.name))
    return list(session.exec(query).all())


# --- registering and retiring -----------------------------------------------------------


def _model_names_taken(session: Session, names: list[str]) -> list[str]:
    bases = session.exec(
        select(col(RegisteredBaseModel.name)).where(col(RegisteredBaseModel.name).in_(names))
    ).all()
    offered = session.exec(
        select(col(ProviderModel.name)).where(col(ProviderModel.name).in_(names))
    ).all()
    return sorted({*bases, *offered})


def _model_names_conflict(taken: Iterable[str]) -> Conflict:
    names = sorted(taken)
    return Conflict(
        f"these model names are taken (by a base model or another provider's model): "
        f"{', '.join(names)}",
        code="provider_model_exists",
        param="models",
        details={"names": names},
    )


def register(
    session: Session, *, state: Runtime, authorized: Authorized, body: ProviderCreate
) -> ProviderView:
    # The reference must name a secret that is there; it is read and dropped, never kept.
    read_secret(body.credential_ref, directories=credential_dirs(state.settings))
    if session.get(Provider, body.name) is not None:
        raise Conflict(
            f"a provider named {body.name!r} exists (names are never reused)",
            code="provider_exists",
            param="name",
        )
    taken = _model_names_taken(session, [model.name for model in body.models])
    if taken:
        raise _model_names_conflict(taken)
    row = Provider(
        name=body.name,
        kind=body.kind,
        base_url=body.base_url,
        regions=list(body.regions),
        credential_ref=body.credential_ref,
        description=body.description,
        status="active",
        registered_by=authorized.principal.sub,
        created_at=int(time.time()),
    )
    offered = [
        ProviderModel(name=model.name, provider=body.name, provider_model=model.provider_model)
        for model in body.models
    ]
    try:
        with session.begin_nested():  # a concurrent registration of a name loses here
            session.add(row)
            session.flush()
            session.add_all(offered)
            session.flush()
    except IntegrityError:
        if session.get(Provider, body.name) is not None:
            raise Conflict(
                f"a provider named {body.name!r} exists", code="provider_exists", param="name"
            ) from None
        raise _model_names_conflict(model.name for model in body.models) from None
    record_allowed(
        session,
        authorized=authorized,
        action="provider.registered",
        resource=policy_object(row.name),
        details={
            "name": row.name,
            "kind": row.kind,
            "base_url": row.base_url,
            "regions": row.regions,
            "models": [{"name": m.name, "provider_model": m.provider_model} for m in offered],
            # where the secret is read from; the secret itself goes nowhere
            "credential_ref": row.credential_ref,
        },
    )
    log.info("provider.registered", name=row.name, models=len(offered), regions=row.regions)
    # in name order, as reads list them
    return ProviderView(row, sorted(offered, key=lambda model: model.name))


def retire(session: Session, *, authorized: Authorized, name: str) -> ProviderView:
    """`DELETE /v1/providers/{name}`: no export goes to it again; its row, its models'
    names and its lineage stay (names are never reused)."""
    row = get(session, name=name, for_update=True)
    if row.status == "retired":
        raise Conflict(f"provider {name} is already retired", code="provider_retired")
    row.status = "retired"
    row.retired_by = authorized.principal.sub
    row.retired_at = int(time.time())
    session.add(row)
    session.flush()
    record_allowed(
        session,
        authorized=authorized,
        action="provider.retired",
        resource=policy_object(row.name),
        details={"name": row.name},
    )
    log.info("provider.retired", name=row.name)
    [view] = _views(session, [row])
    return view


# --- the export decision ------------------------------------------------------------------


def export_forbidden(source: DataSource) -> bool:
    """Whether the source's classification forbids every export."""
    return source.classification in NO_EXPORT_CLASSIFICATIONS


def allowed_transfers(source: DataSource, provider: Provider) -> list[dict[str, Any]]:
    """The source's transfer records that allow sending its personal data to `provider`:
    a region the provider processes data in, and no other provider named."""
    return [
        dict(transfer)
        for transfer in source.transfers or []
        if transfer.get("region") in provider.regions
        and transfer.get("provider") in (None, provider.name)
        and transfer.get("legal_basis")
    ]


def _policy_decisions(
    policy: PolicyEngine, principal: Principal, objects: Sequence[str], *, via: str
) -> list[Any]:
    """`export` on each object, all on one policy version."""
    outcomes: list[Any] = []
    for _ in range(POLICY_VERSION_TRIES):
        outcomes = [
            decide(policy, principal, obj, EXPORT, route=via, method="EXPORT") for obj in objects
        ]
        if len({outcome.policy_version for outcome in outcomes}) == 1:
            break
    return outcomes


def _gates(
    source: DataSource, provider: Provider
) -> tuple[list[dict], list[ExportRefusal], dict | None]:
    passed: list[dict[str, Any]] = []
    refused: list[ExportRefusal] = []

    def gate(name: str, error: GatewayError | None, **figures: Any) -> None:
        if error is None:
            passed.append({"kind": "gate", "gate": name, "passed": True, **figures})
        else:
            refused.append(ExportRefusal(name, error))

    gate(
        "provider_active",
        None
        if provider.status == "active"
        else Conflict(
            f"provider {provider.name} is retired",
            code="provider_retired",
            details={"provider": provider.name},
        ),
    )
    try:
        data_sources.require_usable(source)
        gate("data_source_approved", None)
    except GatewayError as exc:
        gate("data_source_approved", exc)
    gate(
        "classification",
        Forbidden(
            f"data source {source.id} is classified {source.classification}: no export",
            code="export_forbidden_by_classification",
            details={"data_source": source.id, "classification": source.classification},
        )
        if export_forbidden(source)
        else None,
        classification=source.classification,
    )
    transfer = None
    if source.contains_personal_data:
        matching = allowed_transfers(source, provider)
        transfer = matching[0] if matching else None
        gate(
            "transfer",
            None
            if transfer is not None
            else Forbidden(
                f"data source {source.id} holds personal data and its record allows no "
                f"transfer to {provider.name} (regions {', '.join(provider.regions)})",
                code="transfer_not_recorded",
                details={"data_source": source.id, "provider": provider.name},
            ),
            personal_data=True,
            region=None if transfer is None else transfer["region"],
            legal_basis=None if transfer is None else transfer["legal_basis"],
        )
    else:
        gate("transfer", None, personal_data=False)
    return passed, refused, transfer


def check_export(
    session: Session,
    *,
    state: Runtime,
    principal: Principal,
    data_source: DataSource,
    provider: Provider,
    via: str = "executor:federated",
    dry_run: bool = False,
) -> ExportDecision:
    """May `principal` send `data_source`'s data to `provider`. The decision is recorded
    in `session` (`provider.export_checked`), with its policy version; a caller that stops
    at a refusal must still commit it (or record the refusal on its own). When the policy
    refuses, the data source's gates are not looked at: their figures are for those who
    may export it."""
    if data_source.tenant != principal.tenant:  # a caller's mistake, never a decision
        raise NotFound(f"data source {data_source.id!r} not found", code="data_source_not_found")
    policy = state.policy
    objects = [f"ds:{data_source.id}", policy_object(provider.name)]
    outcomes = _policy_decisions(policy, principal, objects, via=via)
    decisions: list[dict[str, Any]] = []
    refusals: list[ExportRefusal] = []
    for obj, outcome in zip(objects, outcomes, strict=True):
        if isinstance(outcome, Authorized):
            decisions.append(outcome.decision_record())
        else:
            denied = refusal(outcome, principal=principal, obj=obj, act=EXPORT)
            refusals.append(ExportRefusal("policy", denied))
    transfer = None
    if not refusals:
        passed, refusals, transfer = _gates(data_source, provider)
        decisions += passed
    decision = ExportDecision(
        provider=provider.name,
        data_source=data_source.id,
        policy_version=outcomes[0].policy_version,
        decisions=decisions,
        refusals=refusals,
        transfer=transfer,
    )
    _record_decision(session, principal=principal, decision=decision, via=via, dry_run=dry_run)
    return decision


def _record_decision(
    session: Session, *, principal: Principal, decision: ExportDecision, via: str, dry_run: bool
) -> None:
    rules = [d["rule"] for d in decision.decisions if d.get("kind") == "policy"]
    record(
        session,
        actor=principal.sub,
        tenant=principal.tenant,
        action="provider.export_checked",
        resource=f"ds:{decision.data_source}",
        decision="allow" if decision.allowed else "deny",
        policy_version=decision.policy_version,
        details={
            "provider": decision.provider,
            "to": policy_object(decision.provider),
            "via": via,
            "dry_run": dry_run,
            "decided_by": rules,
            "refusals": [{"gate": r.gate, "code": r.error.code} for r in decision.refusals],
            "transfer": decision.transfer,
        },
    )
    log.info(
        "provider.export_checked",
        provider=decision.provider,
        data_source=decision.data_source,
        allowed=decision.allowed,
        dry_run=dry_run,
    )


def export_check(
    session: Session, *, state: Runtime, authorized: Authorized, name: str, data_source_id: str
) -> ExportDecision:
    """`POST /v1/providers/{name}/export_check`: the caller's own export decision, as a dry
    run (nothing is sent; the decision is recorded all the same)."""
    provider = get(session, name=name)
    source = data_sources.get_in_tenant(
        session, tenant=authorized.principal.tenant, data_source_id=data_source_id
    )
    return check_export(
        session,
        state=state,
        principal=authorized.principal,
        data_source=source,
        provider=provider,
        via=authorized.route,
        dry_run=True,
    )
