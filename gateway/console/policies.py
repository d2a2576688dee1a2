"""The policy pages' forms and tables: a rule form as the API's `RuleIn`, a refusal from the
policy service placed beside the field it names, rules and explanations as table rows."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import ValidationError
from sqlmodel import Session

from gateway.data_sources import service as data_sources
from gateway.errors import GatewayError
from gateway.policies_api.schemas import RulesChange
from policies.enforcer import Explanation, Link
from policies.vocabulary import EFFECTS, FIELDS, PolicyError, Rule, parse_rule, validate_request

PTYPES = [("p", "grant or deny (p)"), ("g", "role membership (g)")]
LIST_PTYPES = [("", "any"), ("p", "p: grants and denies"), ("g", "g: memberships"), ("g2", "g2")]
EFFECT_OPTIONS = [(effect, effect) for effect in sorted(EFFECTS)]
# Rule fields the tables show, in order: p (sub, tenant, obj, act, eft), g (member, role,
# tenant), g2 (obj, class); each rule fills the columns its ptype has.
COLUMNS = ("sub", "tenant", "obj", "act", "eft", "role", "class")
# The vocabulary's field names as the rule form calls them (a g rule's member is its subject).
FORM_FIELD = {"member": "sub", "values": "form", "ptype": "ptype"}
RULE_FORM_FIELDS = ("ptype", "sub", "tenant", "obj", "act", "eft", "role", "reason")
WHAT_IF_FIELDS = ("sub", "tenant", "obj", "act", "roles")
NEEDS_REASON = "give a reason: it is kept with the new policy version"
_NAMED = re.compile(r"^(?:\w+\[\d+\]: )?(\w+)\b")


def rule_in(form: Mapping[str, Any]) -> dict[str, Any]:
    """The form's rule as the API's JSON body carries it (`RuleIn`: ptype and values)."""
    ptype = str(form.get("ptype") or "p")
    get = {name: str(form.get(name) or "").strip() for name in RULE_FORM_FIELDS}
    if ptype == "g":
        values = [get["sub"], get["role"], get["tenant"]]
    else:
        values = [get["sub"], get["tenant"], get["obj"], get["act"], get["eft"] or "allow"]
    return {"ptype": ptype, "values": values}


def change_checked(rule: dict[str, Any], reason: str) -> tuple[RulesChange | None, dict[str, str]]:
    """The API's `RulesChange` for one rule, or {field: message}: a value too long goes
    beside its field. The console asks for a reason (the API takes one, optionally)."""
    try:
        body = RulesChange.model_validate({"rules": [rule], "reason": reason or None})
    except ValidationError as exc:
        errors: dict[str, str] = {}
        for fault in exc.errors(include_url=False):
            errors.setdefault(_fault_field(rule, fault["loc"]), fault["msg"])
        return None, errors
    if not reason:
        return None, {"reason": NEEDS_REASON}
    return body, {}


def _fault_field(rule: dict[str, Any], loc: tuple[Any, ...]) -> str:
    if loc[:1] == ("reason",):
        return "reason"
    if len(loc) >= 4 and loc[2] == "values" and isinstance(loc[3], int):
        names = FIELDS.get(str(rule.get("ptype")), ())
        if loc[3] < len(names):
            return FORM_FIELD.get(names[loc[3]], names[loc[3]])
    return "form"


def rule_of_line(line: str) -> dict[str, Any] | None:
    """A remove button's rule (its canonical line) as `RuleIn`, None when it is no rule."""
    try:
        rule = parse_rule(line.split(","))
    except PolicyError:
        return None
    return {"ptype": rule.ptype, "values": list(rule.values)}


def placed(exc: GatewayError, fields: Iterable[str], *, default: str = "form") -> dict[str, str]:
    """A refusal beside the field it is about: the tenant for a rule outside the caller's
    tenant, else the field its message names first (`rules[0]: act: unknown action`)."""
    names = set(fields)
    message = re.sub(r"^\w+\[\d+\]: ", "", exc.message)
    field = default
    if exc.code in ("rule_outside_tenant", "tenant_not_visible") and "tenant" in names:
        field = "tenant"
    elif exc.param in names:
        field = str(exc.param)
    elif match := _NAMED.match(exc.message):
        named = FORM_FIELD.get(match.group(1), match.group(1))
        field = named if named in names else default
    return {field: message}


def form_status(exc: GatewayError) -> int:
    """A form sent back: 422 for bad input (the API may say 400), else the refusal's own
    status (409 a rule already there, 404 one that is not)."""
    return exc.status_code if exc.status_code in (403, 404, 409) else 422


def row(rule: Rule, rule_id: int | None = None) -> dict[str, Any]:
    """One rule as a table row: its id, ptype, named fields and canonical line."""
    named = dict(zip(FIELDS[rule.ptype], rule.values, strict=True))
    if "member" in named:
        named["sub"] = named.pop("member")
    return {"id": rule_id, "ptype": rule.ptype, "line": rule.line, **named}


def rows(rules: Iterable[Rule]) -> list[dict[str, Any]]:
    return [row(rule) for rule in rules]


def what_if_errors(explanation: Explanation, values: Mapping[str, str]) -> dict[str, str]:
    """A request the vocabulary refused (the decision's error names the field): the
    vocabulary's own words beside that field."""
    decision = explanation.decision
    if decision.error is None:
        return {}
    if decision.detail in WHAT_IF_FIELDS:
        try:
            validate_request(values["sub"], values["tenant"], values["obj"], values["act"])
        except PolicyError as exc:
            return {exc.field or "form": exc.message}
        return {str(decision.detail): decision.error}
    return {"form": f"the policy could not decide ({decision.error})"}


def chain(links: Iterable[Link]) -> list[str]:
    return [f"{link.source} → {link.target} (via {link.via})" for link in links]


def matched_rows(explanation: Explanation) -> list[dict[str, Any]]:
    return [
        {
            **row(Rule("p", match.rule)),
            "deciding": match.deciding,
            "effect": match.effect,
            "object_match": match.object_match,
            "chain": chain(match.role_chain) + chain(match.object_chain),
        }
        for match in explanation.matched
    ]


def int_or_none(value: str | None) -> int | None:
    return int(value) if value and value.isdigit() and len(value) < 10 else None


PURPOSE_NEEDS_SOURCE = "a purpose is checked against one data source: give the object as ds:<id>"


def purpose_check(
    session: Session, *, tenant: str, obj: str, purpose: str
) -> tuple[dict[str, Any] | None, str | None]:
    """Purposes are not rules: the data source names the ones it may be trained for, and a
    submission's purpose gate reads them. (the outcome, or the error beside the field)."""
    if not purpose:
        return None, None
    if len(purpose) > 64:
        return None, "at most 64 characters"
    if not obj.startswith("ds:") or obj == "ds:*":
        return None, PURPOSE_NEEDS_SOURCE
    try:
        source = data_sources.get_in_tenant(session, tenant=tenant, data_source_id=obj[3:])
    except GatewayError as exc:
        return None, exc.message
    allowed = purpose in source.allowed_purposes
    return {
        "purpose": purpose,
        "allowed": allowed,
        "allowed_purposes": source.allowed_purposes,
    }, None
