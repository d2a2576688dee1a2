"""The vocabulary of authorization: the only strings a rule or a request may contain.

Everything here runs BEFORE Casbin (or the fast path) sees a value. A value that fails is
refused with :class:`PolicyValidationError`, which carries a machine-readable ``reason``
code and the name of the offending ``field`` (the API maps it to 422).

Rules (``ptype`` and its fields, in ``casbin_rule`` column order v0, v1, ...)
------------------------------------------------------------------------------

======  ==========================================  ============================================
ptype   fields                                      meaning
======  ==========================================  ============================================
``p``   ``sub, tenant, obj, act, eft``              ``sub`` may ``act`` on ``obj`` in ``tenant``
                                                    (``*`` = every tenant); ``eft`` is ``allow``
                                                    or ``deny``; deny overrides allow; no
                                                    matching rule denies.
``g``   ``member, role, tenant``                    ``member`` (a user or a role) has ``role`` in
                                                    ``tenant`` (a concrete tenant, never ``*``).
``g2``  ``obj, class``                              data source (or class) ``obj`` is classified
                                                    under ``class``; a rule on the class applies
                                                    to every member of it.
======  ==========================================  ============================================

Subjects: ``user:<sub>`` (the JWT ``sub``) or ``role:<name>``. The prefixes keep a user named
"admin" from ever meaning the role ``admin``.

Tenants: ``[A-Za-z0-9._-]{1,64}``; ``*`` is the global tenant and is legal only in the
``tenant`` field of a ``p`` rule (baseline rules that hold in every tenant). ``platform``
(:data:`PLATFORM_TENANT`) is the platform domain, held outside every tenant: the domain of
the global objects (base models every tenant sees). A change to a global object is decided
there, and only a token issued for it (tenant ``platform``) has memberships there; its
``platform-admin`` role (:data:`PLATFORM_ADMIN_ROLE`) is what the seed grants those changes
to. Which tenant names a token may carry is the gateway's (its registered tenants), not
this module's.

Objects (``kind:id`` or a singleton) and the actions legal on each kind:

============  =====================  ===========================================================
kind          object forms           actions
============  =====================  ===========================================================
``ds``        ``ds:<id>``, ``ds:*``  read, list, create (propose), approve, revoke, upload, train,
                                     hold (set or release a legal hold)
                                     review (a job's suspected mislabels of its files)
                                     export (send its data to an external provider: the
                                     provider's own ``export`` must be allowed too)
``class``     ``class:<label>``,     same as ``ds`` (a rule on a class is a rule on each data
              ``class:*``            source classified under it through ``g2``)
``base``      ``base:<name>``,       read, list, create (register), train (fine-tune on it), retire,
              ``base:*``             infer (call it: /v1/chat/completions)
``model``     ``model:<id>``,        read, list, use (download / serve), promote (ask for a
              ``model:*``            promotion), approve (decide a promotion, clear a flag),
                                     retire, export (dossier), delete (its adapter),
                                     evaluate (re-evaluate it after release), infer (call it:
                                     /v1/chat/completions), route (set its traffic split)
``job``       ``job:<id>``,          read, list, create, cancel
              ``job:*``
``policy``    ``policy``             read (rules, versions), edit (add / remove rules), check
                                     (dry run)
``audit``     ``audit``              read (events, proofs, checkpoints), verify, export
``tenant``    ``tenant``             read, create, edit
``erasure``   ``erasure:<id>``,      read, list, create (a subject's erasure request), decide
              ``erasure:*``
``provider``  ``provider:<name>``,   read, list, create (register), delete (retire), export
              ``provider:*``         (send data to it: the data source's own ``export`` must
                                     be allowed too)
============  =====================  ===========================================================

One more singleton: ``compliance`` (object ``compliance``), action read (the regulators'
records: GDPR Art. 30 records of processing, gateway.compliance).

Wildcards: ``<kind>:*`` (the whole id is ``*``) names every object of that kind. In a rule it
matches any object of the kind (Casbin ``keyMatch``); in a request it names the collection
(used for ``list`` and ``create``), which only a ``<kind>:*`` rule matches. ``*`` anywhere else
is refused. ``g2`` links never contain a wildcard.

Ids and labels: ``[A-Za-z0-9._@:-]``, 1..128 characters for the whole value. Role names:
``[A-Za-z0-9._-]{1,64}``. No whitespace, quotes, commas, parentheses, ``|``, ``&``, ``!`` or
``=`` can pass, so no value can carry matcher text (``True) || (True``) or split a CSV line.

Reason codes (``PolicyValidationError.reason``): ``not_a_string``, ``bad_ptype``,
``field_count``, ``empty``, ``too_long``, ``bad_chars``, ``bad_subject``, ``bad_role``,
``bad_tenant``, ``bad_kind``, ``bad_object``, ``bad_wildcard``, ``bad_action``,
``action_not_for_kind``, ``bad_effect``, ``bad_class``, ``bad_field``.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from typing import Any

MAX_VALUE_LENGTH = 128
MAX_NAME_LENGTH = 64

GLOBAL_TENANT = "*"
#: The platform domain: global objects are changed there, by its platform-admin role.
PLATFORM_TENANT = "platform"
PLATFORM_ADMIN_ROLE = "platform-admin"
WILDCARD_ID = "*"
USER_PREFIX = "user:"
ROLE_PREFIX = "role:"

ALLOW = "allow"
DENY = "deny"
EFFECTS = frozenset({ALLOW, DENY})

_DS_ACTIONS = frozenset(
    {"read", "list", "create", "approve", "revoke", "upload", "train"}
    | {"hold"}
    | {"review"}
    | {"export"}
)

#: kind -> actions legal on it. Kinds with ids are written ``kind:<id>``.
ACTIONS_BY_KIND: Mapping[str, frozenset[str]] = {
    "ds": _DS_ACTIONS,
    "class": _DS_ACTIONS,
    "base": frozenset({"read", "list", "create", "train", "retire", "infer"}),
    "model": frozenset(
        {"read", "list", "use", "promote", "approve", "retire", "export", "delete", "evaluate"}
        | {"infer", "route"}
    ),
    "job": frozenset({"read", "list", "create", "cancel"}),
    "policy": frozenset({"read", "edit", "check"}),
    "audit": frozenset({"read", "verify", "export"}),
    "tenant": frozenset({"read", "create", "edit"}),
    "erasure": frozenset({"read", "list", "create", "decide"}),
    "compliance": frozenset({"read"}),
    "provider": frozenset({"read", "list", "create", "delete", "export"}),
}
KINDS_WITH_ID = frozenset({"ds", "class", "base", "model", "job", "erasure", "provider"})
SINGLETON_KINDS = frozenset({"policy", "audit", "tenant", "compliance"})
OBJECT_KINDS = KINDS_WITH_ID | SINGLETON_KINDS
ACTIONS = frozenset().union(*ACTIONS_BY_KIND.values())

#: field names per ptype, in casbin_rule column order (v0, v1, ...).
FIELDS: Mapping[str, tuple[str, ...]] = {
    "p": ("sub", "tenant", "obj", "act", "eft"),
    "g": ("member", "role", "tenant"),
    "g2": ("obj", "class"),
}
PTYPES = frozenset(FIELDS)
REQUEST_FIELDS = ("sub", "tenant", "obj", "act")

_VALUE_RE = re.compile(r"[A-Za-z0-9._@:*-]+")
_ID_RE = re.compile(r"[A-Za-z0-9._@:-]+")
_NAME_RE = re.compile(r"[A-Za-z0-9._-]+")


class PolicyError(Exception):
    """Base of every error this package raises on purpose. ``reason`` is a stable,
    machine-readable code; ``field`` names the offending field when there is one;
    ``http_status`` is the status the API should answer with."""

    http_status = 400

    def __init__(
        self, reason: str, message: str, *, field: str | None = None, rule: Rule | None = None
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.field = field
        self.message = message
        self.rule = rule

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"reason": self.reason, "field": self.field, "message": self.message}
        if self.rule is not None:
            out["rule"] = self.rule.fields()
        return out


class PolicyValidationError(PolicyError):
    """A rule, request or filter contains something outside the vocabulary (400, as every
    invalid request is: OpenAI's `invalid_request_error`)."""

    http_status = 400


def _memo_ok(fn):
    """Remember the string values a validator accepted (its arguments are the key), so
    loading 100k rules validates each distinct value once. Failures are not remembered."""
    cache: dict[tuple, str] = {}

    @functools.wraps(fn)
    def wrapper(value: Any, *args: Any, **kwargs: Any) -> str:
        if type(value) is not str:
            return fn(value, *args, **kwargs)
        key = (value, args, tuple(kwargs.items()))
        if key in cache:
            return value
        fn(value, *args, **kwargs)
        if len(cache) >= 200_000:
            cache.clear()
        cache[key] = value
        return value

    return wrapper


def _fail(reason: str, field: str, message: str) -> PolicyValidationError:
    return PolicyValidationError(reason, message, field=field)


def _check_string(value: Any, field: str, *, max_length: int = MAX_VALUE_LENGTH) -> str:
    if not isinstance(value, str):
        raise _fail("not_a_string", field, f"{field} must be a string")
    if not value:
        raise _fail("empty", field, f"{field} must not be empty")
    if len(value) > max_length:
        raise _fail("too_long", field, f"{field} is longer than {max_length} characters")
    if not _VALUE_RE.fullmatch(value):
        raise _fail("bad_chars", field, f"{field} may only contain letters, digits and . _ @ : - *")
    return value


def _check_name(name: str, field: str, what: str) -> None:
    if not name or len(name) > MAX_NAME_LENGTH or not _NAME_RE.fullmatch(name):
        raise _fail(
            "bad_role" if what == "role" else "bad_tenant",
            field,
            f"{field}: a {what} name is 1..{MAX_NAME_LENGTH} of letters, digits and . _ -",
        )


@_memo_ok
def validate_role(value: Any, field: str = "role") -> str:
    """``role:<name>``."""
    _check_string(value, field)
    if not value.startswith(ROLE_PREFIX):
        raise _fail("bad_role", field, f"{field} must be role:<name>")
    _check_name(value[len(ROLE_PREFIX) :], field, "role")
    return value


@_memo_ok
def validate_subject(value: Any, field: str = "sub") -> str:
    """``user:<sub>`` or ``role:<name>``."""
    _check_string(value, field)
    if value.startswith(ROLE_PREFIX):
        return validate_role(value, field)
    if not value.startswith(USER_PREFIX):
        raise _fail("bad_subject", field, f"{field} must be user:<sub> or role:<name>")
    if not _ID_RE.fullmatch(value[len(USER_PREFIX) :] or "!"):
        raise _fail("bad_subject", field, f"{field}: user:<sub> needs a sub without '*'")
    return value


@_memo_ok
def validate_tenant(value: Any, field: str = "tenant", *, allow_global: bool = False) -> str:
    _check_string(value, field)
    if value == GLOBAL_TENANT:
        if allow_global:
            return value
        raise _fail("bad_tenant", field, f"{field}: the global tenant '*' is not allowed here")
    _check_name(value, field, "tenant")
    return value


def object_kind(value: str) -> str:
    """The kind of a syntactically valid object string."""
    return value.split(":", 1)[0]


@_memo_ok
def validate_object(value: Any, field: str = "obj", *, allow_wildcard: bool = True) -> str:
    """``<kind>:<id>``, ``<kind>:*`` (when ``allow_wildcard``) or a singleton kind."""
    _check_string(value, field)
    kind, sep, ident = value.partition(":")
    if not sep:
        if value in SINGLETON_KINDS:
            return value
        if value in KINDS_WITH_ID:
            raise _fail("bad_object", field, f"{field}: {value} objects are {value}:<id>")
        raise _fail("bad_kind", field, f"{field}: unknown object kind")
    if kind not in KINDS_WITH_ID:
        if kind in SINGLETON_KINDS:
            raise _fail("bad_object", field, f"{field}: '{kind}' takes no id")
        raise _fail("bad_kind", field, f"{field}: unknown object kind")
    if ident == WILDCARD_ID:
        if allow_wildcard:
            return value
        raise _fail("bad_wildcard", field, f"{field}: no wildcard allowed here")
    if not ident:
        raise _fail("bad_object", field, f"{field}: missing id after '{kind}:'")
    if "*" in ident:
        raise _fail("bad_wildcard", field, f"{field}: '*' may only stand alone as the id")
    return value


@_memo_ok
def validate_action(value: Any, field: str = "act", *, obj: str | None = None) -> str:
    _check_string(value, field)
    if value not in ACTIONS:
        raise _fail("bad_action", field, f"{field}: unknown action")
    if obj is not None and value not in ACTIONS_BY_KIND[object_kind(obj)]:
        raise _fail(
            "action_not_for_kind",
            field,
            f"{field}: '{value}' is not an action on {object_kind(obj)}",
        )
    return value


def validate_effect(value: Any, field: str = "eft") -> str:
    if not isinstance(value, str):
        raise _fail("not_a_string", field, f"{field} must be a string")
    if value not in EFFECTS:
        raise _fail("bad_effect", field, f"{field} must be 'allow' or 'deny'")
    return value


def validate_class_object(value: Any, field: str) -> str:
    validate_object(value, field, allow_wildcard=False)
    if object_kind(value) != "class":
        raise _fail("bad_class", field, f"{field} must be class:<label>")
    return value


def validate_rule(ptype: Any, values: Sequence[Any]) -> tuple[str, tuple[str, ...]]:
    """Validate one rule; returns ``(ptype, values)`` as a str and a tuple of str."""
    if not isinstance(ptype, str) or ptype not in FIELDS:
        raise _fail("bad_ptype", "ptype", "ptype must be one of p, g, g2")
    if isinstance(values, str | bytes) or not isinstance(values, Sequence):
        raise _fail("field_count", "values", "values must be a list of strings")
    names = FIELDS[ptype]
    if len(values) != len(names):
        raise _fail(
            "field_count", "values", f"a {ptype} rule has {len(names)} fields ({', '.join(names)})"
        )
    if ptype == "p":
        sub, tenant, obj, act, eft = values
        validate_subject(sub, "sub")
        validate_tenant(tenant, "tenant", allow_global=True)
        validate_object(obj, "obj", allow_wildcard=True)
        validate_action(act, "act", obj=obj)
        validate_effect(eft, "eft")
    elif ptype == "g":
        member, role, tenant = values
        validate_subject(member, "member")
        validate_role(role, "role")
        validate_tenant(tenant, "tenant", allow_global=False)
    else:
        obj, cls = values
        validate_object(obj, "obj", allow_wildcard=False)
        if object_kind(obj) not in ("ds", "class"):
            raise _fail("bad_object", "obj", "obj must be ds:<id> or class:<label>")
        validate_class_object(cls, "class")
    return ptype, tuple(values)


def validate_request(sub: Any, tenant: Any, obj: Any, act: Any) -> tuple[str, str, str, str]:
    """A decision request. ``tenant`` must be concrete; ``obj`` may be ``<kind>:*`` to name
    the collection; ``act`` must be legal on the object's kind."""
    validate_subject(sub, "sub")
    validate_tenant(tenant, "tenant", allow_global=False)
    validate_object(obj, "obj", allow_wildcard=True)
    validate_action(act, "act", obj=obj)
    return sub, tenant, obj, act


def normalize_role_name(name: Any) -> str | None:
    """A role name from a token (``ml-engineer`` or ``role:ml-engineer``) as ``role:<name>``,
    or None when it is not a legal role name. Such a role can appear in no rule (rules are
    validated), so dropping it cannot change a decision."""
    if not isinstance(name, str):
        return None
    bare = name[len(ROLE_PREFIX) :] if name.startswith(ROLE_PREFIX) else name
    if not bare or len(bare) > MAX_NAME_LENGTH or not _NAME_RE.fullmatch(bare):
        return None
    return ROLE_PREFIX + bare


def validate_filter_value(value: Any, field: str) -> str:
    """A filter for list_rules: any value in the rule character set."""
    return _check_string(value, field)


class Rule:
    """One rule: ``ptype`` and its field values (casbin_rule v0, v1, ... in order).

    Building a Rule does not validate; :func:`parse_rule` does. ``line`` is the rule's
    canonical text (``ptype,v0,v1,...`` with exactly the ptype's field count), which defines
    both the rule-set hash and the order in which rules are handed to Casbin."""

    __slots__ = ("ptype", "values", "line")
    ptype: str
    values: tuple[str, ...]
    line: str

    def __init__(self, ptype: str, values: Sequence[str]) -> None:
        values = tuple(values)
        object.__setattr__(self, "ptype", ptype)
        object.__setattr__(self, "values", values)
        object.__setattr__(self, "line", ",".join((ptype, *values)))

    def __setattr__(self, name: str, value: Any) -> None:  # frozen
        raise AttributeError("Rule is immutable")

    @classmethod
    def p(cls, sub: str, tenant: str, obj: str, act: str, eft: str = ALLOW) -> Rule:
        return cls("p", (sub, tenant, obj, act, eft))

    @classmethod
    def g(cls, member: str, role: str, tenant: str) -> Rule:
        return cls("g", (member, role, tenant))

    @classmethod
    def g2(cls, obj: str, cls_: str) -> Rule:
        return cls("g2", (obj, cls_))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Rule) and self.line == other.line

    def __lt__(self, other: Rule) -> bool:
        return self.line < other.line

    def __hash__(self) -> int:
        return hash(self.line)

    def __repr__(self) -> str:
        return f"Rule({self.line!r})"

    def as_list(self) -> list[str]:
        """``[ptype, v0, v1, ...]``: the form used in ``changes`` JSON."""
        return [self.ptype, *self.values]

    def fields(self) -> dict[str, str]:
        """Named fields, e.g. ``{"ptype": "p", "sub": ..., "tenant": ..., ...}``."""
        return {"ptype": self.ptype, **dict(zip(FIELDS[self.ptype], self.values, strict=True))}

    def columns(self) -> dict[str, str]:
        """The casbin_rule row: ptype and v0..v5, unused columns empty."""
        row = {"ptype": self.ptype}
        for i in range(6):
            row[f"v{i}"] = self.values[i] if i < len(self.values) else ""
        return row


def parse_rule(data: Any) -> Rule:
    """A validated Rule from any of: a Rule; ``[ptype, v0, ...]``; ``{"ptype": .., "values":
    [..]}``; or named fields ``{"ptype": "p", "sub": .., "tenant": .., "obj": .., "act": ..,
    "eft": ..}`` (``eft`` defaults to allow). Unknown keys are refused (``bad_field``)."""
    ptype: Any  # unvalidated until validate_rule below
    values: Any
    if isinstance(data, Rule):
        ptype, values = data.ptype, data.values
    elif isinstance(data, Mapping):
        ptype = data.get("ptype")
        if not isinstance(ptype, str) or ptype not in FIELDS:
            raise _fail("bad_ptype", "ptype", "ptype must be one of p, g, g2")
        names = FIELDS[ptype]
        if "values" in data:
            extra = set(data) - {"ptype", "values"}
            values = data["values"]
        else:
            extra = set(data) - {"ptype", *names}
            given = dict(data)
            if ptype == "p":
                given.setdefault("eft", ALLOW)
            missing = [n for n in names if n not in given]
            if missing:
                raise _fail("field_count", missing[0], f"missing field {missing[0]}")
            values = [given[n] for n in names]
        if extra:
            name = sorted(map(str, extra))[0]
            raise _fail("bad_field", name, f"unknown field {name}")
    elif isinstance(data, Sequence) and not isinstance(data, str | bytes) and len(data) > 0:
        ptype, values = data[0], list(data[1:])
    else:
        raise _fail("field_count", "values", "a rule is [ptype, v0, ...] or an object")
    ptype, values = validate_rule(ptype, values)
    return Rule(ptype, values)
