"""Policy as code: one YAML file per tenant, and the Casbin rules it stands for.

The format (what :func:`render` writes; ``#`` comments anywhere)::

    tenant: acme
    roles:                  # g, <member>, <role>, acme
      role:ml-engineer:
        - role:senior-ml
        - user:bob
    grants:                 # p, <subject>, acme, <object>, <action>, <effect>
      - {subject: user:bob, object: ds:ds-0123, action: train, effect: allow}
    classes:                # g2, <object>, <class>
      class:restricted:
        - ds:ds-0456

- ``tenant`` is required; ``roles``, ``grants`` and ``classes`` may be left out, empty
  (``{}``, ``[]``) or null. Every rule of the file holds in its tenant; the baseline that
  holds in every tenant (tenant ``*``) is the seed's and never in a file.
- ``effect`` is ``allow`` (the default) or ``deny``; deny overrides allow.
- A grant has no ``purpose``: the policy model decides subject, tenant, object and action,
  and a data source's ``allowed_purposes`` decide purposes. A ``purpose`` key is refused
  rather than silently ignored, so a file never seems to narrow a grant it does not.
- Every value is text, read as written (``tenant: 007`` is ``007``), and must pass the
  vocabulary (policies.vocabulary, the only source of legal strings).
- The same rule twice is an error (a copy-paste slip, never intended).

Mapping: role ``R`` with member ``M`` is ``g, M, R, <tenant>``; a grant is ``p, subject,
<tenant>, object, action, effect``; class ``C`` with member ``O`` is ``g2, O, C``. The
mapping is exact both ways: :func:`render` of a rule set parses back to the same set.

Errors are collected, all of them, each ``FILE:LINE: message`` (:class:`PolicyFileError`),
and raised together as :class:`PolicyFileInvalid`.

Two readers, one result. The reference (:func:`parse_reference`) walks ``yaml.compose``
nodes, so it reads any YAML and knows each value's line. YAML parsing costs about 50 µs a
grant, too slow for a 100k-rule file, so :func:`parse` first tries a line scanner that
reads only the layout :func:`render` writes (comments and blank lines allowed anywhere);
on any line outside that layout, and on any invalid value, it hands the whole text to the
reference, which is therefore what reports every error. tests/policies/test_policyfile.py
checks both readers agree.

Pure: no gateway, no database.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from policies.vocabulary import (
    ALLOW,
    PolicyError,
    Rule,
    object_kind,
    validate_action,
    validate_class_object,
    validate_effect,
    validate_object,
    validate_role,
    validate_rule,
    validate_subject,
    validate_tenant,
)

SECTIONS = ("tenant", "roles", "grants", "classes")
GRANT_KEYS = ("subject", "object", "action", "effect")
#: keys a grant may not have, with why.
REFUSED_GRANT_KEYS = {
    "purpose": (
        "purpose_unsupported",
        "purpose: the policy has no purposes (a data source's allowed_purposes decide them); "
        "remove the key",
    ),
}
MAX_ERRORS = 200

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class PolicyFileError:
    file: str
    line: int
    message: str
    #: a stable code: a vocabulary reason (``bad_action``, ...) or one of ``yaml_syntax``,
    #: ``bad_structure``, ``unknown_key``, ``duplicate_key``, ``missing_key``,
    #: ``duplicate_rule``, ``purpose_unsupported``.
    reason: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"

    def as_dict(self) -> dict[str, object]:
        return {
            "file": self.file,
            "line": self.line,
            "message": self.message,
            "reason": self.reason,
        }


class PolicyFileInvalid(Exception):
    """The file is not a valid policy: every error found, in line order."""

    def __init__(self, errors: Sequence[PolicyFileError], *, more: int = 0) -> None:
        self.errors = tuple(errors)
        self.more = more
        super().__init__("\n".join(str(e) for e in self.errors))


@dataclass(frozen=True)
class PolicyDocument:
    """A valid policy file: its tenant, and each rule (canonical line) with the file line
    that states it."""

    file: str
    tenant: str
    lines: Mapping[str, int]

    def rules(self) -> list[Rule]:
        """The rules in canonical order."""
        return sorted(_rule_of(line) for line in self.lines)

    def line_of(self, rule: Rule | str) -> int | None:
        return self.lines.get(rule.line if isinstance(rule, Rule) else rule)


def _rule_of(line: str) -> Rule:
    ptype, *values = line.split(",")
    return Rule(ptype, values)


# --------------------------------------------------------------------------- located values

Loc = tuple[str, int]  # (text, line)


@dataclass
class _Raw:
    """What either reader found, before the vocabulary: each value with its line."""

    tenant: Loc | None = None
    roles: list[tuple[Loc, list[Loc]]] = field(default_factory=list)
    grants: list[tuple[int, dict[str, Loc]]] = field(default_factory=list)
    classes: list[tuple[Loc, list[Loc]]] = field(default_factory=list)
    errors: list[PolicyFileError] = field(default_factory=list)


# --------------------------------------------------------------------------- building


class _Builder:
    """Turns located values into canonical rule lines, collecting every error."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.errors: list[PolicyFileError] = []
        self.lines: dict[str, int] = {}

    def fail(self, line: int, reason: str, message: str) -> None:
        self.errors.append(PolicyFileError(self.file, line, message, reason))

    def check(self, loc: Loc, validate: Callable[..., object], *args: object, **kw: object) -> bool:
        """``validate(value, *args, **kw)`` passed; else the error is recorded at its line."""
        try:
            validate(loc[0], *args, **kw)
        except PolicyError as exc:
            self.fail(loc[1], exc.reason, f"{exc.message}: {loc[0]!r}")
            return False
        return True

    def add(self, line: str, at: int) -> None:
        first = self.lines.setdefault(line, at)
        if first != at:
            self.fail(at, "duplicate_rule", f"the same rule as line {first}: {line}")

    def grant(self, tenant: str, at: int, given: dict[str, Loc]) -> None:
        missing = [key for key in GRANT_KEYS[:3] if key not in given]
        if missing:
            self.fail(at, "missing_key", f"a grant needs {', '.join(missing)}")
            return
        sub, obj, act = given["subject"], given["object"], given["action"]
        eft = given.get("effect", (ALLOW, at))
        ok = self.check(sub, validate_subject, "subject")
        obj_ok = self.check(obj, validate_object, "object")
        # An action's legality depends on the object's kind only (vocabulary ACTIONS_BY_KIND):
        # naming the kind keeps the validator's memo small.
        kind = object_kind(obj[0]) if obj_ok else None
        ok &= self.check(act, validate_action, "action", obj=kind)
        ok &= self.check(eft, validate_effect, "effect")
        if ok and obj_ok:
            self.add(f"p,{sub[0]},{tenant},{obj[0]},{act[0]},{eft[0]}", at)

    def member(self, ptype: str, values: tuple[str, ...], loc: Loc) -> None:
        try:
            validate_rule(ptype, values)
        except PolicyError as exc:
            self.fail(loc[1], exc.reason, f"{exc.message}: {loc[0]!r}")
            return
        self.add(",".join((ptype, *values)), loc[1])


def _build(raw: _Raw, file: str) -> PolicyDocument | PolicyFileInvalid:
    builder = _Builder(file)
    builder.errors.extend(raw.errors)
    if raw.tenant is None:
        if not raw.errors:
            builder.fail(1, "missing_key", "the file needs 'tenant: <name>'")
        return _invalid(builder.errors)
    tenant = raw.tenant[0]
    if not builder.check(raw.tenant, validate_tenant, "tenant"):
        tenant = "t"  # a legal stand-in, so that every other value is still checked
    for role, members in raw.roles:
        if builder.check(role, validate_role, "role"):
            for member in members:
                builder.member("g", (member[0], role[0], tenant), member)
    for at, given in raw.grants:
        builder.grant(tenant, at, given)
    for cls, members in raw.classes:
        if builder.check(cls, validate_class_object, "class"):
            for member in members:
                builder.member("g2", (member[0], cls[0]), member)
    if builder.errors:
        return _invalid(builder.errors)
    return PolicyDocument(file, tenant, builder.lines)


def _invalid(errors: list[PolicyFileError]) -> PolicyFileInvalid:
    ordered = sorted(errors, key=lambda e: e.line)
    return PolicyFileInvalid(ordered[:MAX_ERRORS], more=max(0, len(ordered) - MAX_ERRORS))


# --------------------------------------------------------------------------- reference reader


class _Walker:
    """Reads yaml.compose nodes into a _Raw, recording structural errors."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.raw = _Raw()

    def fail(self, node: yaml.Node | int, reason: str, message: str) -> None:
        line = node if isinstance(node, int) else node.start_mark.line + 1
        self.raw.errors.append(PolicyFileError(self.file, line, message, reason))

    def mapping(self, node: yaml.Node, what: str) -> Iterator[tuple[yaml.ScalarNode, yaml.Node]]:
        """The pairs of a mapping node with scalar keys, each key once."""
        if not isinstance(node, yaml.MappingNode):
            self.fail(node, "bad_structure", f"{what} must be a mapping")
            return
        seen: dict[str, int] = {}
        for key, value in node.value:
            if not isinstance(key, yaml.ScalarNode):
                self.fail(key, "bad_structure", f"a key in {what} must be a plain string")
                continue
            if key.value in seen:
                first = seen[key.value]
                self.fail(key, "duplicate_key", f"{key.value!r} again (first on line {first})")
                continue
            seen[key.value] = key.start_mark.line + 1
            yield key, value

    def scalar(self, node: yaml.Node, what: str) -> Loc | None:
        if not isinstance(node, yaml.ScalarNode):
            self.fail(node, "bad_structure", f"{what} must be a string")
            return None
        return node.value, node.start_mark.line + 1

    def members(self, node: yaml.Node, what: str) -> list[Loc]:
        if not isinstance(node, yaml.SequenceNode):
            self.fail(node, "bad_structure", f"{what}: members must be a list (write [] for none)")
            return []
        found = [self.scalar(item, f"a member of {what}") for item in node.value]
        return [loc for loc in found if loc is not None]

    def groups(self, node: yaml.Node, what: str) -> list[tuple[Loc, list[Loc]]]:
        if _is_null(node):
            return []
        out = []
        for key, value in self.mapping(node, what):
            out.append(((key.value, key.start_mark.line + 1), self.members(value, key.value)))
        return out

    def grants(self, node: yaml.Node) -> None:
        if _is_null(node):
            return
        if not isinstance(node, yaml.SequenceNode):
            self.fail(node, "bad_structure", "grants must be a list")
            return
        for item in node.value:
            at = item.start_mark.line + 1
            if not isinstance(item, yaml.MappingNode):
                self.fail(item, "bad_structure", "a grant is {subject, object, action, effect}")
                continue
            given: dict[str, Loc] = {}
            for key, value in self.mapping(item, "a grant"):
                if key.value in REFUSED_GRANT_KEYS:
                    reason, message = REFUSED_GRANT_KEYS[key.value]
                    self.fail(key, reason, message)
                elif key.value not in GRANT_KEYS:
                    self.fail(key, "unknown_key", f"unknown key {key.value!r} in a grant")
                elif (loc := self.scalar(value, key.value)) is not None:
                    given[key.value] = loc
            self.raw.grants.append((at, given))

    def document(self, root: yaml.Node | None) -> _Raw:
        if root is None:
            self.fail(1, "bad_structure", "the file is empty")
            return self.raw
        for key, value in self.mapping(root, "the file"):
            name = key.value
            if name == "tenant":
                self.raw.tenant = self.scalar(value, "tenant")
            elif name == "roles":
                self.raw.roles = self.groups(value, "roles")
            elif name == "grants":
                self.grants(value)
            elif name == "classes":
                self.raw.classes = self.groups(value, "classes")
            else:
                self.fail(
                    key, "unknown_key", f"unknown key {name!r} (expected {', '.join(SECTIONS)})"
                )
        return self.raw


def _is_null(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null"


def _reference_raw(text: str, file: str) -> _Raw:
    walker = _Walker(file)
    try:
        root = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        detail = " ".join(str(part) for part in (exc.context, exc.problem) if part)
        walker.fail(line, "yaml_syntax", f"not valid YAML: {detail}")
        return walker.raw
    except yaml.YAMLError as exc:
        walker.fail(1, "yaml_syntax", f"not valid YAML: {exc}")
        return walker.raw
    return walker.document(root)


def parse_reference(text: str, *, file: str = "<policy>") -> PolicyDocument:
    """Any YAML, through yaml.compose. Raises PolicyFileInvalid."""
    result = _build(_reference_raw(text, file), file)
    if isinstance(result, PolicyFileInvalid):
        raise result
    return result


# --------------------------------------------------------------------------- fast reader

#: a value YAML reads as plain text in block and flow context alike (no quoting, no
#: indicator first, no ':' last); render quotes anything else.
_PLAIN = r"[A-Za-z0-9_](?:[A-Za-z0-9._@:*-]*[A-Za-z0-9._@*-])?"
_PLAIN_RE = re.compile(_PLAIN)
_END = r"(?: +#.*| *)"
_TOP = re.compile(rf"(tenant|roles|grants|classes):(?: ({_PLAIN}|\{{\}}|\[\]))?{_END}")
_KEY = re.compile(rf"  ({_PLAIN}):( \[\])?{_END}")
_ITEM = re.compile(rf"    - ({_PLAIN}){_END}")
_GRANT = re.compile(
    rf"  - \{{subject: ({_PLAIN}), object: ({_PLAIN}), action: ({_PLAIN})"
    rf"(?:, effect: ({_PLAIN}))?\}}{_END}"
)
#: a run of grant lines in one pass; the values, loosely matched here (no backtracking),
#: must each be plain: _fast_document checks every distinct one.
_LOOSE = r"[A-Za-z0-9._@:*-]+"
_GRANTS = re.compile(
    rf"^  - \{{subject: ({_LOOSE}), object: ({_LOOSE}), action: ({_LOOSE})"
    rf"(?:, effect: ({_LOOSE}))?\}}{_END}$",
    re.MULTILINE,
)
_ANY_GRANT = re.compile(rf"  - \{{((?:[a-z]+: {_PLAIN})(?:, [a-z]+: {_PLAIN})*)\}}{_END}")


class _Fallback(Exception):
    """The text leaves the fast reader's layout: read it with the reference."""


Grant = tuple[int, str, str, str, str | None]  # (line, subject, object, action, effect)


@dataclass
class _Scan:
    """What the fast reader found: values with their lines, nothing validated."""

    tenant: Loc | None = None
    roles: list[tuple[Loc, list[Loc]]] = field(default_factory=list)
    classes: list[tuple[Loc, list[Loc]]] = field(default_factory=list)
    grants: list[Grant] = field(default_factory=list)


class _Scanner:
    """A state machine over the lines: the section (a top-level key) and, in roles and
    classes, the key whose members follow."""

    def __init__(self) -> None:
        self.found = _Scan()
        self.seen: set[str] = set()  # top-level keys
        self.section: str | None = None
        self.open = False  # the section takes keys or items (it is not `{}` or `[]`)
        self.keys: set[str] = set()  # of the section (roles, classes)
        self.items = 0  # of the section (grants)
        self.group: list[Loc] | None = None  # the members of the last key
        self.open_group = False  # the last key takes items (it is not `[]`)

    def close_group(self) -> None:
        if self.group is not None and not self.group and self.open_group:
            raise _Fallback  # a key with nothing under it is null: the reference says why
        self.group = None

    def close_section(self) -> None:
        self.close_group()
        if self.section is not None and self.open and not self.keys and not self.items:
            raise _Fallback  # a null section
        self.section, self.open, self.keys, self.items = None, False, set(), 0

    def top(self, match: re.Match[str], number: int) -> None:
        self.close_section()
        name, value = match.group(1), match.group(2)
        if name in self.seen:
            raise _Fallback
        self.seen.add(name)
        if name == "tenant":
            if value is None or value in ("{}", "[]"):
                raise _Fallback
            self.found.tenant = (value, number)
            return
        if value is not None and value != ("[]" if name == "grants" else "{}"):
            raise _Fallback
        self.section, self.open = name, value is None

    def key(self, match: re.Match[str], number: int) -> None:
        if self.section not in ("roles", "classes") or not self.open:
            raise _Fallback
        self.close_group()
        name = match.group(1)
        if name in self.keys:
            raise _Fallback
        self.keys.add(name)
        members: list[Loc] = []
        target = self.found.roles if self.section == "roles" else self.found.classes
        target.append(((name, number), members))
        self.group = members
        self.open_group = match.group(2) is None

    def item(self, match: re.Match[str], number: int) -> None:
        if self.group is None or not self.open_group:
            raise _Fallback
        self.group.append((match.group(1), number))

    def other_grant(self, line: str, number: int) -> None:
        """A grant with its keys in another order."""
        match = _ANY_GRANT.fullmatch(line)
        if match is None:
            raise _Fallback
        given: dict[str, str] = {}
        for part in match.group(1).split(", "):
            key, value = part.split(": ")
            if key not in GRANT_KEYS or key in given:
                raise _Fallback
            given[key] = value
        if not {"subject", "object", "action"} <= set(given):
            raise _Fallback
        grant = (number, given["subject"], given["object"], given["action"], given.get("effect"))
        self.found.grants.append(grant)

    def grants_run(self, lines: list[str], start: int, end: int) -> None:
        """Grant lines ``start`` to ``end`` (indexes), one regex over them all when every
        one is in the canonical key order."""
        if self.section != "grants" or not self.open:
            raise _Fallback
        found = _GRANTS.findall("\n".join(lines[start:end]))
        if len(found) == end - start:  # each match is a whole line: all of them matched
            self.found.grants.extend(
                (start + 1 + k, sub, obj, act, eft or None)
                for k, (sub, obj, act, eft) in enumerate(found)
            )
        else:
            for index in range(start, end):
                match = _GRANT.fullmatch(lines[index])
                if match is None:
                    self.other_grant(lines[index], index + 1)
                    continue
                sub, obj, act, eft = match.groups()
                self.found.grants.append((index + 1, sub, obj, act, eft))
        self.items += end - start

    def scan(self, text: str) -> _Scan:
        if "\t" in text or "\r" in text:
            raise _Fallback
        lines = text.split("\n")
        count, number = len(lines), 0
        while number < count:
            line = lines[number]
            number += 1  # the line's number (1-based); also the index of the next line
            if line.startswith("  - {"):
                end = number
                while end < count and lines[end].startswith("  - {"):
                    end += 1
                self.grants_run(lines, number - 1, end)
                number = end
                continue
            stripped = line.lstrip(" ")
            if not stripped or stripped.startswith("#"):
                continue
            if (match := _ITEM.fullmatch(line)) is not None:
                self.item(match, number)
            elif (match := _KEY.fullmatch(line)) is not None:
                self.key(match, number)
            elif (match := _TOP.fullmatch(line)) is not None:
                self.top(match, number)
            else:
                raise _Fallback
        self.close_section()
        return self.found


def _valid(values: Iterable[str], validate: Callable[..., object], *args: object) -> bool:
    # Each value comes once: the validator's memo (functools.wraps keeps the bare function
    # as __wrapped__) would only cost time here.
    check = getattr(validate, "__wrapped__", validate)
    try:
        for value in values:
            check(value, *args)
    except PolicyError:
        return False
    return True


def _fast_document(found: _Scan, file: str) -> PolicyDocument | None:
    """The document, when every value is valid and no rule repeats; None otherwise (the
    reference then finds what is wrong). Each distinct value is validated once: a p rule is
    valid exactly when its subject, object, effect and (object kind, action) are."""
    if found.tenant is None or not _valid([found.tenant[0]], validate_tenant, "tenant"):
        return None
    tenant = found.tenant[0]
    grants = found.grants
    subjects, objects = {g[1] for g in grants}, {g[2] for g in grants}
    actions, effects = {g[3] for g in grants}, {g[4] or ALLOW for g in grants}
    plain = _PLAIN_RE.fullmatch
    if not all(plain(v) for values in (subjects, objects, actions, effects) for v in values):
        return None  # YAML might read it otherwise: the reference decides
    if not (
        _valid(subjects, validate_subject, "subject")
        and _valid(objects, validate_object, "object")
        and _valid(effects, validate_effect, "effect")
    ):
        return None
    kinds = {obj: object_kind(obj) for obj in objects}
    try:
        for kind, act in {(kinds[g[2]], g[3]) for g in grants}:
            validate_action(act, "action", obj=kind)
        lines = {
            f"p,{sub},{tenant},{obj},{act},{eft or ALLOW}": number
            for number, sub, obj, act, eft in grants
        }
        count = len(grants)
        for (role, _), members in found.roles:
            validate_role(role, "role")
            for member, number in members:
                validate_rule("g", (member, role, tenant))
                lines[f"g,{member},{role},{tenant}"] = number
            count += len(members)
        for (cls, _), members in found.classes:
            for member, number in members:
                validate_rule("g2", (member, cls))
                lines[f"g2,{member},{cls}"] = number
            count += len(members)
    except PolicyError:
        return None
    if len(lines) != count:
        return None  # a rule twice
    return PolicyDocument(file, tenant, lines)


def parse(text: str, *, file: str = "<policy>") -> PolicyDocument:
    """A policy file's text -> its document; the fast reader where it can, the reference
    otherwise and for every error. Raises PolicyFileInvalid."""
    try:
        found = _Scanner().scan(text)
    except _Fallback:
        return parse_reference(text, file=file)
    return _fast_document(found, file) or parse_reference(text, file=file)


def load(path: str | Path) -> PolicyDocument:
    """Read and parse a policy file (UTF-8). Raises PolicyFileInvalid, OSError."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise PolicyFileInvalid(
            [PolicyFileError(str(path), 1, f"not UTF-8 text ({exc.reason})", "yaml_syntax")]
        ) from None
    return parse(text, file=str(path))


# --------------------------------------------------------------------------- writing


def _scalar(value: str) -> str:
    """Plain when YAML reads it back as the same text, single-quoted otherwise (rule values
    hold no quote, so quoting needs no escapes)."""
    return value if _PLAIN_RE.fullmatch(value) else f"'{value}'"


def render(tenant: str, rules: Iterable[Rule], *, header: Sequence[str] = ()) -> str:
    """The file for ``tenant`` holding exactly ``rules``: p and g rules of that tenant and
    g2 links, in canonical order. Raises ValueError for a rule of another tenant."""
    roles: dict[str, list[str]] = {}
    classes: dict[str, list[str]] = {}
    grants: list[str] = []
    for rule in sorted(set(rules)):
        values = rule.values
        if rule.ptype == "p":
            sub, rule_tenant, obj, act, eft = values
            if rule_tenant != tenant:
                raise ValueError(f"{rule.line} is not a rule of tenant {tenant!r}")
            grants.append(
                f"  - {{subject: {_scalar(sub)}, object: {_scalar(obj)}, "
                f"action: {_scalar(act)}, effect: {_scalar(eft)}}}"
            )
        elif rule.ptype == "g":
            member, role, rule_tenant = values
            if rule_tenant != tenant:
                raise ValueError(f"{rule.line} is not a rule of tenant {tenant!r}")
            roles.setdefault(role, []).append(member)
        else:
            obj, cls = values
            classes.setdefault(cls, []).append(obj)
    out = [f"# {line}".rstrip() for line in header]
    out.append(f"tenant: {_scalar(tenant)}")
    out.extend(_groups("roles", roles))
    out.append("grants:" if grants else "grants: []")
    out.extend(grants)
    out.extend(_groups("classes", classes))
    return "\n".join(out) + "\n"


def _groups(name: str, groups: dict[str, list[str]]) -> list[str]:
    if not groups:
        return [f"{name}: {{}}"]
    out = [f"{name}:"]
    for key in sorted(groups):
        out.append(f"  {_scalar(key)}:")
        out.extend(f"    - {_scalar(member)}" for member in sorted(groups[key]))
    return out
