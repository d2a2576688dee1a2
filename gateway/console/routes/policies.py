"""Policies (admins): the rules, filtered and paged, added and removed through forms (each
change a new policy version with its reason); versions and the diff between any two; and
"what if", the explain service's decision with the rules that made it.

Each page calls the policy API's own service with the API's own authorization objects and
actions (policy read / edit / check); a refusal comes back beside the field it names."""

from __future__ import annotations

from typing import Annotated, Any, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlmodel import Session

from gateway.authz import Authorized, allows
from gateway.console import policies as views
from gateway.console.deps import FormDep, console_authorize
from gateway.console.forms import checked, lines
from gateway.console.render import render
from gateway.deps import SessionDep, StateDep
from gateway.errors import GatewayError
from gateway.policies_api import service
from gateway.policies_api.schemas import PolicyExplainCreate
from gateway.state import GatewayState
from policies.vocabulary import GLOBAL_TENANT

router = APIRouter(prefix="/console/policies")

ReadPolicy = Annotated[Authorized, console_authorize("policy", "read")]
EditPolicy = Annotated[Authorized, console_authorize("policy", "edit")]
CheckPolicy = Annotated[Authorized, console_authorize("policy", "check")]
FilterValue = Annotated[str | None, Query(max_length=256)]
Cursor = Annotated[int | None, Query(ge=0, le=2**31 - 1)]
VersionId = Annotated[int, Query(ge=0, le=2**31 - 1)]
PAGE = 50
FILTERS = ("tenant", "ptype", "sub", "obj", "act")


def _rules_page(
    request: Request,
    session: Session,
    state: GatewayState,
    authorized: Authorized,
    *,
    filters: dict[str, str],
    after: int | None = None,
    values: dict[str, Any] | None = None,
    errors: dict[str, str] | None = None,
    remove_error: tuple[str, str] | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    principal = authorized.principal
    filter_errors: dict[str, str] = {}
    page = None
    try:
        page = service.list_rules(
            session,
            authorized=authorized,
            tenant=filters.get("tenant") or None,
            ptype=filters.get("ptype") or None,
            sub=filters.get("sub") or None,
            obj=filters.get("obj") or None,
            act=filters.get("act") or None,
            limit=PAGE,
            after=after,
        )
    except GatewayError as exc:
        filter_errors = views.placed(exc, FILTERS, default="sub")
        status_code = max(status_code, 422)
    shown = {name: value for name, value in filters.items() if value}
    next_after = page.next_after if page else None
    return render(
        request,
        "policies.html",
        state=state,
        principal=principal,
        status_code=status_code,
        filters=filters,
        filter_errors=filter_errors,
        list_ptypes=views.LIST_PTYPES,
        tenants=[(principal.tenant, principal.tenant), (GLOBAL_TENANT, "* (every tenant)")],
        rules=[views.row(item.rule, item.id) for item in page.items] if page else [],
        columns=views.COLUMNS,
        may_edit=allows(state.policy, principal, "policy", "edit"),
        may_check=allows(state.policy, principal, "policy", "check"),
        ptypes=views.PTYPES,
        effects=views.EFFECT_OPTIONS,
        values=values or {"tenant": principal.tenant, "ptype": "p", "eft": "allow"},
        errors=errors or {},
        remove_error=remove_error,
        saved=views.int_or_none(request.query_params.get("saved")),
        next_href=(
            f"/console/policies?{urlencode({**shown, 'after': next_after})}" if next_after else None
        ),
    )


@router.get("", response_class=HTMLResponse, include_in_schema=False)
def rules_page(
    request: Request,
    session: SessionDep,
    state: StateDep,
    authorized: ReadPolicy,
    tenant: FilterValue = None,
    ptype: Literal["", "p", "g", "g2"] | None = None,
    sub: FilterValue = None,
    obj: FilterValue = None,
    act: FilterValue = None,
    after: Cursor = None,
) -> HTMLResponse:
    filters = {"tenant": tenant, "ptype": ptype, "sub": sub, "obj": obj, "act": act}
    clean = {name: (value or "").strip() for name, value in filters.items()}
    return _rules_page(request, session, state, authorized, filters=clean, after=after)


def _change(
    request: Request,
    session: Session,
    state: GatewayState,
    authorized: Authorized,
    *,
    rule: dict[str, Any],
    reason: str,
    values: dict[str, Any] | None = None,
    removing: str | None = None,
) -> Response:
    """One rule added (or, with ``removing``, removed) as a new version through the API's
    service, or the rules page back with the refusal beside its field."""
    body, errors = views.change_checked(rule, reason)
    status = 422
    if body is not None:
        change = {"add" if removing is None else "remove": body.rules}
        try:
            version = service.change_rules(
                session, state=state, authorized=authorized, reason=body.reason, **change
            )
        except GatewayError as exc:
            session.rollback()  # nothing was written; leave nothing half-begun
            errors = views.placed(exc, views.RULE_FORM_FIELDS)
            status = views.form_status(exc)
        else:
            return RedirectResponse(f"/console/policies?saved={version.id}", status_code=303)
    return _rules_page(
        request,
        session,
        state,
        authorized,
        filters={},
        values=values,
        errors=errors if removing is None else {},
        remove_error=None if removing is None else (removing, " ".join(errors.values())),
        status_code=status,
    )


@router.post("/rules", include_in_schema=False)
def add_rule(
    request: Request, form: FormDep, session: SessionDep, state: StateDep, authorized: EditPolicy
) -> Response:
    values = {name: str(form.get(name) or "") for name in views.RULE_FORM_FIELDS}
    return _change(
        request,
        session,
        state,
        authorized,
        rule=views.rule_in(form),
        reason=values["reason"].strip(),
        values=values,
    )


@router.post("/rules/remove", include_in_schema=False)
def remove_rule(
    request: Request, form: FormDep, session: SessionDep, state: StateDep, authorized: EditPolicy
) -> Response:
    line = str(form.get("rule") or "")
    rule = views.rule_of_line(line) or {"ptype": "p", "values": [line]}
    return _change(
        request,
        session,
        state,
        authorized,
        rule=rule,
        reason=str(form.get("reason") or "").strip(),
        removing=line,
    )


@router.get("/versions", response_class=HTMLResponse, include_in_schema=False)
def versions_page(
    request: Request,
    session: SessionDep,
    state: StateDep,
    authorized: ReadPolicy,
    before: Cursor = None,
) -> HTMLResponse:
    versions, next_before = service.list_versions(
        session, authorized=authorized, limit=PAGE, before=before, with_changes=True
    )
    return render(
        request,
        "policy_versions.html",
        state=state,
        principal=authorized.principal,
        versions=versions,
        next_href=f"/console/policies/versions?before={next_before}" if next_before else None,
    )


@router.get("/diff", response_class=HTMLResponse, include_in_schema=False)
def diff_page(
    request: Request,
    session: SessionDep,
    state: StateDep,
    authorized: ReadPolicy,
    from_version: Annotated[int, Query(alias="from", ge=0, le=2**31 - 1)],
    to_version: Annotated[int, Query(alias="to", ge=0, le=2**31 - 1)],
) -> HTMLResponse:
    added, removed = service.diff_versions(
        session, authorized=authorized, from_id=from_version, to_id=to_version
    )
    return render(
        request,
        "policy_diff.html",
        state=state,
        principal=authorized.principal,
        from_version=from_version,
        to_version=to_version,
        added=views.rows(added),
        removed=views.rows(removed),
        columns=views.COLUMNS,
    )


def _what_if(
    request: Request,
    state: GatewayState,
    authorized: Authorized,
    *,
    values: dict[str, str],
    errors: dict[str, str] | None = None,
    explanation: Any = None,
    purpose: dict[str, Any] | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    decision = explanation.decision if explanation is not None else None
    engine = state.policy
    return render(
        request,
        "policy_what_if.html",
        state=state,
        principal=authorized.principal,
        status_code=status_code,
        values=values,
        errors=errors or {},
        decision=decision if decision is not None and decision.error is None else None,
        deny_override=explanation.deny_override if explanation is not None else False,
        matched=views.matched_rows(explanation) if explanation is not None else [],
        version_id=(
            engine.version_id
            if decision is not None and engine.policy_version == decision.policy_version
            else None
        ),
        columns=views.COLUMNS[:5],
        purpose=purpose,
    )


@router.get("/what-if", response_class=HTMLResponse, include_in_schema=False)
def what_if_page(request: Request, state: StateDep, authorized: CheckPolicy) -> HTMLResponse:
    values = {
        name: request.query_params.get(name, "")[:256]
        for name in (*views.WHAT_IF_FIELDS, "purpose")
    }
    values["tenant"] = values["tenant"] or authorized.principal.tenant
    return _what_if(request, state, authorized, values=values)


@router.post("/what-if", response_class=HTMLResponse, include_in_schema=False)
def what_if(
    request: Request, form: FormDep, session: SessionDep, state: StateDep, authorized: CheckPolicy
) -> HTMLResponse:
    """The explain service (recorded in the audit trail, as over the API): a POST."""
    values = {name: str(form.get(name) or "").strip() for name in views.WHAT_IF_FIELDS}
    asked = {**values, "tenant": values["tenant"] or None, "roles": lines(values["roles"])}
    values["purpose"] = str(form.get("purpose") or "").strip()
    body, errors = checked(PolicyExplainCreate, asked)
    if body is None:
        return _what_if(request, state, authorized, values=values, errors=errors, status_code=422)
    try:
        _tenant, explanation = service.explain(
            session, state=state, authorized=authorized, request=body
        )
    except GatewayError as exc:
        errors = views.placed(exc, views.WHAT_IF_FIELDS)
        return _what_if(request, state, authorized, values=values, errors=errors, status_code=422)
    tenant = body.tenant or authorized.principal.tenant
    errors = views.what_if_errors(explanation, {**values, "tenant": tenant})
    purpose, purpose_error = views.purpose_check(
        session, tenant=tenant, obj=body.obj, purpose=values["purpose"]
    )
    if purpose_error:
        errors["purpose"] = purpose_error
    if errors:
        return _what_if(request, state, authorized, values=values, errors=errors, status_code=422)
    return _what_if(
        request, state, authorized, values=values, explanation=explanation, purpose=purpose
    )
