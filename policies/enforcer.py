"""Decisions: the one place a casbin Enforcer is built, and the fast path that decides
exactly as it would.

:func:`build_casbin_enforcer` builds a plain ``casbin.Enforcer`` from ``model.conf`` and a
rule list (handed to Casbin in canonical order, see policies.store). Plain pycasbin
evaluates the matcher once per rule for every request (about 0.1 s per check at 20k rules),
so requests are decided by :class:`PolicyEngine` instead, which computes the same function
from indexes:

- ``g(r.sub, p.sub, r.dom)``: p.sub is ``r.sub`` itself or a role reachable from it through
  ``g`` links of tenant ``r.dom`` (plus the caller's token roles, which count as links from
  ``r.sub`` in that tenant), at most 9 links away: Casbin's default role manager
  (``max_hierarchy_level=10``) stops there, and so does the fast path.
- ``g2(r.obj, p.obj)``: the same over ``g2`` links (no tenant).
- ``keyMatch(r.obj, p.obj)``: p.obj without ``*`` equals r.obj; with a ``*`` at index i,
  ``r.obj`` has at least i characters and agrees with p.obj on the first i.
- ``p.dom == r.dom || p.dom == "*"`` and ``r.act == p.act``.
- Effect ``some(allow) && !some(deny)``: allowed iff an allow rule matches and no deny rule
  does; nothing matching denies.
- The rule that decided (Casbin's ``enforce_ex`` explanation): Casbin walks the rules in
  order, stops at the first matching deny and reports the last matching rule it saw; so it
  is the first matching deny in canonical order, else the last matching allow, else none.

:meth:`PolicyEngine.explain` decides the same way and keeps every matching rule with the
role chain (g links, token roles) and class chain (g2 links) that reached it;
:meth:`PolicyEngine.what_if` is a separate engine with a change applied, for planning one
(policies.plan), and :meth:`PolicyEngine.decide_many` decides many requests on one
snapshot.

The engine holds an immutable snapshot (indexes + the policy version that names them);
a decision reads one snapshot reference, so it is consistent and needs no lock. Changes
build a new snapshot (copying only the indexes they touch) under a writer lock and swap it
in. Any exception while deciding yields a deny with ``Decision.error`` set.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import casbin
from casbin import persist
from sqlalchemy import Connection, Engine
from sqlalchemy.orm import Session

from policies import store
from policies.vocabulary import (
    ALLOW,
    DENY,
    GLOBAL_TENANT,
    PolicyError,
    Rule,
    normalize_role_name,
    parse_rule,
    validate_action,
    validate_object,
    validate_request,
    validate_subject,
    validate_tenant,
)

log = logging.getLogger(__name__)

MODEL_PATH = Path(__file__).with_name("model.conf")
#: Casbin's RoleManager(10) finds a role at most 9 links away.
MAX_ROLE_DEPTH = 9
#: refresh() applies at most this many versions incrementally; more -> full reload.
MAX_INCREMENTAL_VERSIONS = 64
MAX_INCREMENTAL_RULES = 20_000


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    #: the p rule's values (sub, tenant, obj, act, eft) that decided, None for no match.
    rule: tuple[str, ...] | None
    #: hash of the rule set that made the decision.
    policy_version: str
    #: None, or a machine-readable code when deciding failed (the decision is then deny):
    #: a vocabulary reason code (e.g. ``bad_chars``) for an invalid request,
    #: ``not_loaded`` before the policy was loaded, ``internal`` for anything else.
    error: str | None = None
    #: the offending request field, or the exception text, when ``error`` is set.
    detail: str | None = None

    @property
    def outcome(self) -> str:
        """``allow``, ``deny`` or ``error`` (what the audit event records)."""
        if self.error is not None:
            return "error"
        return "allow" if self.allowed else "deny"

    def as_dict(self) -> dict[str, Any]:
        return {
            "decision": self.outcome,
            "allowed": self.allowed,
            "rule": list(self.rule) if self.rule is not None else None,
            "policy_version": self.policy_version,
            "error": self.error,
            "detail": self.detail,
        }


# --------------------------------------------------------------------------- plain casbin


class _RuleListAdapter(persist.Adapter):
    def __init__(self, rules: Sequence[Rule]) -> None:
        self._rules = rules

    def load_policy(self, model: Any) -> None:
        # What casbin's own file adapter does (persist.load_policy_line): append each rule.
        # (model.add_policy would first scan the list for a duplicate: quadratic.)
        for rule in self._rules:
            model.model[rule.ptype[0]][rule.ptype].policy.append(list(rule.values))


def build_casbin_enforcer(rules: Iterable[Rule]) -> casbin.Enforcer:
    """A plain ``casbin.Enforcer`` on ``model.conf`` holding ``rules`` in canonical order.
    The reference the fast path is tested against; too slow to decide requests with."""
    ordered = sorted(set(rules))
    return casbin.Enforcer(str(MODEL_PATH), _RuleListAdapter(ordered))


# --------------------------------------------------------------------------- snapshot

_Entry = tuple[str, bool, tuple[str, ...]]  # (canonical line, is_deny, p values)


class _Snapshot:
    """Immutable once published. ``exact`` indexes p rules by (sub, tenant, obj, act);
    ``wild`` indexes p rules whose obj has a ``*`` by (obj before the *, sub, tenant, act);
    ``groups`` is tenant -> member -> roles (g); ``classes`` is obj -> classes (g2)."""

    __slots__ = (
        "version",
        "version_id",
        "rules",
        "exact",
        "wild",
        "wild_lengths",
        "groups",
        "classes",
    )

    def __init__(self) -> None:
        self.version = store.EMPTY_HASH
        self.version_id = 0
        #: canonical lines of the rules held (strings: invisible to the garbage collector)
        self.rules: set[str] = set()
        self.exact: dict[tuple[str, str, str, str], tuple[_Entry, ...]] = {}
        self.wild: dict[tuple[str, str, str, str], tuple[_Entry, ...]] = {}
        self.wild_lengths: tuple[int, ...] = ()
        self.groups: dict[str, dict[str, frozenset[str]]] = {}
        self.classes: dict[str, frozenset[str]] = {}

    def derive(self) -> _Snapshot:
        new = _Snapshot()
        new.version, new.version_id = self.version, self.version_id
        new.rules, new.exact, new.wild = self.rules, self.exact, self.wild
        new.wild_lengths, new.groups, new.classes = self.wild_lengths, self.groups, self.classes
        return new


class _Builder:
    """Applies rule additions and removals to a derived snapshot, copying each index the
    first time it is touched."""

    def __init__(self, snap: _Snapshot, *, fresh: bool = False) -> None:
        self.snap = snap
        self._copied: set[str] = set()
        self._copied_tenants: set[str] = set()
        if fresh:
            self._copied.update({"rules", "exact", "wild", "groups", "classes"})

    def _own(self, name: str) -> Any:
        if name not in self._copied:
            setattr(self.snap, name, getattr(self.snap, name).copy())
            self._copied.add(name)
        return getattr(self.snap, name)

    def _tenant(self, tenant: str) -> dict[str, frozenset[str]]:
        groups = self._own("groups")
        if tenant not in self._copied_tenants:
            groups[tenant] = dict(groups.get(tenant, {}))
            self._copied_tenants.add(tenant)
        return groups[tenant]

    @staticmethod
    def _p_keys(rule: Rule) -> list[tuple[str, tuple[str, str, str, str]]]:
        sub, tenant, obj, act, _ = rule.values
        keys = [("exact", (sub, tenant, obj, act))]
        star = obj.find("*")
        if star != -1:
            keys.append(("wild", (obj[:star], sub, tenant, act)))
        return keys

    def add(self, rule: Rule) -> None:
        rules = self._own("rules")
        if rule.line in rules:
            raise KeyError(f"rule already present: {rule.line}")
        rules.add(rule.line)
        if rule.ptype == "p":
            entry: _Entry = (rule.line, rule.values[4] == DENY, rule.values)
            for index, key in self._p_keys(rule):
                table = self._own(index)
                table[key] = (*table.get(key, ()), entry)
        elif rule.ptype == "g":
            member, role, tenant = rule.values
            graph = self._tenant(tenant)
            graph[member] = graph.get(member, frozenset()) | {role}
        else:
            obj, cls = rule.values
            classes = self._own("classes")
            classes[obj] = classes.get(obj, frozenset()) | {cls}

    def remove(self, rule: Rule) -> None:
        rules = self._own("rules")
        if rule.line not in rules:
            raise KeyError(f"rule not present: {rule.line}")
        rules.remove(rule.line)
        if rule.ptype == "p":
            for index, key in self._p_keys(rule):
                table = self._own(index)
                rest = tuple(e for e in table.get(key, ()) if e[0] != rule.line)
                if rest:
                    table[key] = rest
                else:
                    table.pop(key, None)
        elif rule.ptype == "g":
            member, role, tenant = rule.values
            graph = self._tenant(tenant)
            roles = graph.get(member, frozenset()) - {role}
            if roles:
                graph[member] = roles
            else:
                graph.pop(member, None)
            if not graph:
                self._own("groups").pop(tenant, None)
                self._copied_tenants.discard(tenant)
        else:
            obj, cls = rule.values
            classes = self._own("classes")
            rest = classes.get(obj, frozenset()) - {cls}
            if rest:
                classes[obj] = rest
            else:
                classes.pop(obj, None)

    def finish(self, version: str, version_id: int) -> _Snapshot:
        if "wild" in self._copied:
            self.snap.wild_lengths = tuple(sorted({len(k[0]) for k in self.snap.wild}))
        self.snap.version = version
        self.snap.version_id = version_id
        return self.snap


def _rule_of(line: str) -> Rule:
    ptype, *values = line.split(",")
    return Rule(ptype, values)


def _reach(
    graph: dict[str, frozenset[str]] | None, start: str, extra: Sequence[str] = ()
) -> set[str]:
    """``start`` and every node reachable from it in at most MAX_ROLE_DEPTH links; ``extra``
    are additional links out of ``start``."""
    seen = {start}
    if graph:
        first = graph.get(start)
        if first:
            frontier = [n for n in first if n not in seen]
            seen.update(frontier)
        else:
            frontier = []
    else:
        frontier = []
    for n in extra:
        if n not in seen:
            seen.add(n)
            frontier.append(n)
    if not graph:
        return seen
    depth = 1
    while frontier and depth < MAX_ROLE_DEPTH:
        nxt = []
        for node in frontier:
            links = graph.get(node)
            if links:
                for n in links:
                    if n not in seen:
                        seen.add(n)
                        nxt.append(n)
        frontier = nxt
        depth += 1
    return seen


def _decide(
    snap: _Snapshot, sub: str, tenant: str, obj: str, act: str, extra: Sequence[str]
) -> Decision:
    subjects = _reach(snap.groups.get(tenant), sub, extra)
    objects = _reach(snap.classes, obj) if snap.classes else (obj,)
    return _match(snap, subjects, objects, tenant, obj, act)


def _match(
    snap: _Snapshot,
    subjects: Collection[str],
    objects: Collection[str],
    tenant: str,
    obj: str,
    act: str,
) -> Decision:
    """The decision, given the request's subjects (``sub`` and its roles) and objects
    (``obj`` and its classes)."""
    tenants = (tenant, GLOBAL_TENANT) if tenant != GLOBAL_TENANT else (tenant,)
    exact = snap.exact
    first_deny: _Entry | None = None
    last_allow: _Entry | None = None
    hits: list[_Entry] = []
    for s in subjects:
        for t in tenants:
            for o in objects:
                found = exact.get((s, t, o, act))
                if found:
                    hits.extend(found)
    if snap.wild_lengths:
        wild = snap.wild
        n = len(obj)
        for length in snap.wild_lengths:
            if length > n:
                break
            prefix = obj[:length]
            for s in subjects:
                for t in tenants:
                    found = wild.get((prefix, s, t, act))
                    if found:
                        hits.extend(found)
    for entry in hits:
        if entry[1]:
            if first_deny is None or entry[0] < first_deny[0]:
                first_deny = entry
        elif last_allow is None or entry[0] > last_allow[0]:
            last_allow = entry
    if first_deny is not None:
        return Decision(False, first_deny[2], snap.version)
    if last_allow is not None:
        return Decision(True, last_allow[2], snap.version)
    return Decision(False, None, snap.version)


# --------------------------------------------------------------------------- explanation


@dataclass(frozen=True, slots=True)
class Link:
    """One step of a chain: ``source`` reaches ``target`` through ``via``, the canonical line
    of a ``g`` or ``g2`` rule, or ``token`` (a role the caller's token holds)."""

    source: str
    target: str
    via: str


@dataclass(frozen=True, slots=True)
class Match:
    """A p rule that matches a request, and how: the role chain from the request's subject
    to the rule's subject, and the class chain from the request's object to the rule's
    object (``object_match``: ``exact``, ``wildcard`` (keyMatch) or ``class`` (g2))."""

    rule: tuple[str, ...]
    role_chain: tuple[Link, ...]
    object_chain: tuple[Link, ...]
    object_match: str
    deciding: bool

    @property
    def line(self) -> str:
        return ",".join(("p", *self.rule))

    @property
    def effect(self) -> str:
        return self.rule[4]


@dataclass(frozen=True, slots=True)
class Explanation:
    """A decision and every p rule that matched it, in canonical order; the deciding one is
    marked (the first deny, else the last allow: what :func:`_decide` picks)."""

    decision: Decision
    matched: tuple[Match, ...] = ()

    @property
    def deciding(self) -> Match | None:
        return next((m for m in self.matched if m.deciding), None)

    @property
    def deny_override(self) -> bool:
        """A deny decided although an allow matched too."""
        return not self.decision.allowed and any(m.effect == ALLOW for m in self.matched)


def _tree(
    graph: dict[str, frozenset[str]] | None,
    start: str,
    via: Callable[[str, str], str],
    extra: Sequence[str] = (),
) -> dict[str, Link | None]:
    """What :func:`_reach` finds, each node with the link it was first reached by (a
    shortest chain; rule links before token links, names in order)."""
    graph = graph or {}
    parents: dict[str, Link | None] = {start: None}
    frontier: list[str] = []
    for node in sorted(graph.get(start, ())):
        if node not in parents:
            parents[node] = Link(start, node, via(start, node))
            frontier.append(node)
    for node in extra:
        if node not in parents:
            parents[node] = Link(start, node, "token")
            frontier.append(node)
    depth = 1
    while frontier and depth < MAX_ROLE_DEPTH:
        nxt = []
        for node in frontier:
            for target in sorted(graph.get(node, ())):
                if target not in parents:
                    parents[target] = Link(node, target, via(node, target))
                    nxt.append(target)
        frontier = nxt
        depth += 1
    return parents


def _chain(parents: dict[str, Link | None], node: str) -> tuple[Link, ...]:
    links: list[Link] = []
    link = parents[node]
    while link is not None:
        links.append(link)
        link = parents[link.source]
    return tuple(reversed(links))


def _explain(
    snap: _Snapshot, sub: str, tenant: str, obj: str, act: str, extra: Sequence[str]
) -> Explanation:
    """:func:`_decide`, keeping every match and how it was reached."""
    subjects = _tree(snap.groups.get(tenant), sub, lambda m, r: f"g,{m},{r},{tenant}", extra)
    objects = _tree(snap.classes, obj, lambda o, c: f"g2,{o},{c}")
    tenants = (tenant, GLOBAL_TENANT) if tenant != GLOBAL_TENANT else (tenant,)
    found: dict[str, tuple[_Entry, str, str, str]] = {}  # line -> (entry, subject, obj, how)
    for s in subjects:
        for t in tenants:
            for o in objects:
                for entry in snap.exact.get((s, t, o, act), ()):
                    found.setdefault(entry[0], (entry, s, o, "exact" if o == obj else "class"))
            for length in snap.wild_lengths:
                if length > len(obj):
                    break
                for entry in snap.wild.get((obj[:length], s, t, act), ()):
                    found.setdefault(entry[0], (entry, s, obj, "wildcard"))
    denies = [line for line, item in found.items() if item[0][1]]
    allows = [line for line, item in found.items() if not item[0][1]]
    decider = min(denies) if denies else max(allows) if allows else None
    decision = Decision(
        decider is not None and not denies,
        found[decider][0][2] if decider is not None else None,
        snap.version,
    )
    matched = tuple(
        Match(
            rule=entry[2],
            role_chain=_chain(subjects, s),
            object_chain=_chain(objects, o),
            object_match=how,
            deciding=line == decider,
        )
        for line, (entry, s, o, how) in sorted(found.items())
    )
    return Explanation(decision, matched)


# --------------------------------------------------------------------------- engine


@contextmanager
def _reading(bind: Engine | Session | Connection) -> Iterator[Session | Connection]:
    if isinstance(bind, Engine):
        with bind.connect() as conn:
            try:
                yield conn
            finally:
                conn.rollback()
    else:
        yield bind


@dataclass(frozen=True)
class RefreshResult:
    changed: bool
    full_reload: bool
    policy_version: str
    version_id: int


class PolicyEngine:
    """The gateway's decision point: loads the rules from the database, decides fast, and
    follows changes other processes commit (:meth:`refresh`). Thread-safe."""

    def __init__(
        self, rules: Iterable[Any] | None = None, *, version: str | None = None, version_id: int = 0
    ) -> None:
        self._write_lock = threading.Lock()
        self._loaded = rules is not None
        self._snap = _Snapshot()
        #: set when a full reload found rules whose hash differs from the head version's.
        self.integrity_error: str | None = None
        self._integrity_head: tuple[int, str] | None = None
        if rules is not None:
            self._replace([parse_rule(r) for r in rules], version=version, version_id=version_id)

    # ---- state

    @property
    def loaded(self) -> bool:
        return self._loaded

    @property
    def policy_version(self) -> str:
        return self._snap.version

    @property
    def version_id(self) -> int:
        return self._snap.version_id

    @property
    def rule_count(self) -> int:
        return len(self._snap.rules)

    def rules(self) -> list[Rule]:
        """The current rules in canonical order."""
        return sorted(_rule_of(line) for line in self._snap.rules)

    def computed_hash(self) -> str:
        """ruleset_hash of the rules held now (equals policy_version unless the database
        was changed behind the store's back)."""
        return store.lines_hash(self._snap.rules)

    def casbin_enforcer(self) -> casbin.Enforcer:
        """A plain Casbin enforcer on the same rules (for tests and the benchmark)."""
        return build_casbin_enforcer(self.rules())

    # ---- deciding

    def decide(
        self, sub: str, tenant: str, obj: str, act: str, extra_roles: Iterable[str] = ()
    ) -> Decision:
        """Decide ``(sub, tenant, obj, act)``. ``extra_roles`` are role names from the
        caller's token (``ml-engineer`` or ``role:ml-engineer``); each counts as a membership
        of ``sub`` in ``tenant`` for this request (names that are not legal role names are
        dropped: no rule can mention them). Never raises: a failure is a deny with
        ``error`` set."""
        snap = self._snap
        try:
            if not self._loaded:
                return Decision(False, None, snap.version, "not_loaded", "policy not loaded")
            validate_request(sub, tenant, obj, act)
            extra: list[str] = []
            if extra_roles:
                if isinstance(extra_roles, str):
                    extra_roles = (extra_roles,)
                for name in extra_roles:
                    role = normalize_role_name(name)
                    if role is not None:
                        extra.append(role)
            return _decide(snap, sub, tenant, obj, act, extra)
        except PolicyError as exc:
            return Decision(False, None, snap.version, exc.reason, exc.field)
        except Exception as exc:
            log.exception("authorization decision failed")
            return Decision(False, None, snap.version, "internal", f"{type(exc).__name__}: {exc}")

    def explain(
        self, sub: str, tenant: str, obj: str, act: str, extra_roles: Iterable[str] = ()
    ) -> Explanation:
        """:meth:`decide`, with every p rule that matched and the chains that reached it
        (deny-override visible). Never raises: a failure is a deny with ``error`` set and
        nothing matched."""
        snap = self._snap
        try:
            if not self._loaded:
                decision = Decision(False, None, snap.version, "not_loaded", "policy not loaded")
                return Explanation(decision)
            validate_request(sub, tenant, obj, act)
            if isinstance(extra_roles, str):
                extra_roles = (extra_roles,)
            extra = [r for r in map(normalize_role_name, extra_roles) if r is not None]
            return _explain(snap, sub, tenant, obj, act, extra)
        except PolicyError as exc:
            return Explanation(Decision(False, None, snap.version, exc.reason, exc.field))
        except Exception as exc:
            log.exception("authorization explanation failed")
            detail = f"{type(exc).__name__}: {exc}"
            return Explanation(Decision(False, None, snap.version, "internal", detail))

    def decide_many(self, tenant: str, requests: Iterable[tuple[str, str, str]]) -> list[Decision]:
        """:meth:`decide` for each ``(sub, obj, act)`` in ``tenant`` (no token roles), on one
        snapshot, finding each subject's roles and each object's classes once."""
        snap = self._snap
        subjects: dict[str, set[str]] = {}
        objects: dict[str, Collection[str]] = {}
        kinds_ok: set[tuple[str, str]] = set()
        out = []
        for sub, obj, act in requests:
            try:
                if not self._loaded:
                    raise LookupError
                if sub not in subjects:
                    validate_subject(sub, "sub")
                    validate_tenant(tenant, "tenant")
                    subjects[sub] = _reach(snap.groups.get(tenant), sub)
                if obj not in objects:
                    validate_object(obj, "obj")
                    objects[obj] = _reach(snap.classes, obj) if snap.classes else (obj,)
                if (obj.split(":", 1)[0], act) not in kinds_ok:
                    validate_action(act, "act", obj=obj)
                    kinds_ok.add((obj.split(":", 1)[0], act))
                decision = _match(snap, subjects[sub], objects[obj], tenant, obj, act)
            except Exception:  # decide says what went wrong, as it always would
                decision = self.decide(sub, tenant, obj, act)
            out.append(decision)
        return out

    # ---- what-if

    def what_if(self, added: Iterable[Any] = (), removed: Iterable[Any] = ()) -> PolicyEngine:
        """A separate, frozen engine: the rules held now with one change applied (the
        indexes it touches are copied, the rest shared). This engine is left as it is.
        Its ``policy_version`` is the hash the changed rule set would have (unchanged
        when the change is empty); ``version_id`` is this one's. Raises KeyError like
        :meth:`apply_changes`."""
        added = [parse_rule(r) for r in added]
        removed = [parse_rule(r) for r in removed]
        snap = self._snap
        builder = _Builder(snap.derive())
        for rule in removed:
            builder.remove(rule)
        for rule in added:
            builder.add(rule)
        changed = bool(added or removed)
        version = store.lines_hash(builder.snap.rules) if changed else snap.version
        other = PolicyEngine()
        other._snap = builder.finish(version, snap.version_id)
        other._loaded = self._loaded
        return other

    def holds(self, rule: Rule) -> bool:
        """Whether the rule is held now."""
        return rule.line in self._snap.rules

    def tenant_lines(self, tenant: str) -> list[str]:
        """The canonical lines, sorted, of the p rules of ``tenant`` and the g memberships in
        it (not the ``*`` baseline, not g2): what the tenant's policy file holds."""
        suffix = "," + tenant
        found = []
        for line in self._snap.rules:
            if line[0] == "p":
                if line.split(",", 3)[2] == tenant:
                    found.append(line)
            elif line[1] == "," and line.endswith(suffix):  # g (a g2 line starts "g2,")
                found.append(line)
        return sorted(found)

    def memberships(self, tenant: str) -> Mapping[str, frozenset[str]]:
        """member -> the roles its ``g`` rules give it in ``tenant`` (read-only)."""
        return MappingProxyType(self._snap.groups.get(tenant, {}))

    def classes_of(self, obj: str) -> frozenset[str]:
        """The classes a request on ``obj`` also stands for (what :meth:`decide` follows:
        ``g2`` links, at most MAX_ROLE_DEPTH away), ``obj`` excluded."""
        return frozenset(_reach(self._snap.classes, obj) - {obj})

    def classifications(self) -> Mapping[str, frozenset[str]]:
        """object -> the classes its ``g2`` rules put it under (read-only)."""
        return MappingProxyType(self._snap.classes)

    def grants_of(self, subjects: Collection[str], tenant: str) -> list[tuple[str, ...]]:
        """The p rules (values) whose subject is one of ``subjects`` and whose tenant is
        ``tenant`` or ``*``, in canonical order."""
        tenants = {tenant, GLOBAL_TENANT}
        found = {
            entry[0]: entry[2]
            for key, entries in self._snap.exact.items()
            if key[0] in subjects and key[1] in tenants
            for entry in entries
        }
        return [found[line] for line in sorted(found)]

    # ---- changing

    def _replace(self, rules: list[Rule], *, version: str | None, version_id: int) -> None:
        builder = _Builder(_Snapshot(), fresh=True)
        for rule in rules:
            if rule.line not in builder.snap.rules:
                builder.add(rule)
        self._snap = builder.finish(version or store.ruleset_hash(rules), version_id)
        self._loaded = True

    def apply_changes(
        self, added: Iterable[Any], removed: Iterable[Any], *, version: str, version_id: int
    ) -> None:
        """Apply one change (rules validated). Raises KeyError, leaving the engine as it was,
        when an added rule is already held or a removed one is not."""
        added = [parse_rule(r) for r in added]
        removed = [parse_rule(r) for r in removed]
        with self._write_lock:
            builder = _Builder(self._snap.derive())
            for rule in removed:
                builder.remove(rule)
            for rule in added:
                builder.add(rule)
            self._snap = builder.finish(version, version_id)

    def load(self, bind: Engine | Session | Connection) -> RefreshResult:
        """Full load from the database: the rules and the head version, consistent."""
        with self._write_lock, _reading(bind) as conn:
            return self._full_load(conn)

    def _full_load(self, conn: Session | Connection) -> RefreshResult:
        for _ in range(10):
            head = store.head_version(conn)
            rules = store.load_rules(conn)
            again = store.head_version(conn)
            if head == again:
                break
        else:
            raise RuntimeError("policy kept changing while it was being loaded")
        computed = store.ruleset_hash(rules)
        version, version_id = computed, 0
        self.integrity_error = None
        if head is not None:
            version_id = head.id
            if head.hash != computed:
                # The table differs from what the versions say: decide with what is there,
                # named truthfully, and say so.
                self.integrity_error = (
                    f"casbin_rule hashes to {computed}, policy version {head.id} says {head.hash}"
                )
                self._integrity_head = (head.id, head.hash)
                log.error("policy integrity: %s", self.integrity_error)
            else:
                version = head.hash
        self._replace(rules, version=version, version_id=version_id)
        return RefreshResult(True, True, self._snap.version, version_id)

    def refresh(self, bind: Engine | Session | Connection) -> RefreshResult:
        """Catch up with the database: a cheap look at the newest version; if it is not ours,
        apply the newer versions' changes in order (a full reload when more than
        MAX_INCREMENTAL_VERSIONS are new, when the chain does not continue from our version,
        or when a change does not fit). Call it from a background thread every 0.5 s and
        after committing a change."""
        with self._write_lock, _reading(bind) as conn:
            snap = self._snap
            head = store.head_version(conn)
            if not self._loaded:
                return self._full_load(conn)
            if self.integrity_error is not None:
                # Reload only when a new version appears, not on every poll.
                if head is not None and (head.id, head.hash) == self._integrity_head:
                    return RefreshResult(False, False, snap.version, snap.version_id)
                return self._full_load(conn)
            if head is None:
                if snap.version_id == 0:
                    return RefreshResult(False, False, snap.version, 0)
                return self._full_load(conn)
            if head.id == snap.version_id and head.hash == snap.version:
                return RefreshResult(False, False, snap.version, snap.version_id)
            if head.id < snap.version_id:
                return self._full_load(conn)
            newer = store.versions_after(
                conn, after_id=snap.version_id, limit=MAX_INCREMENTAL_VERSIONS + 1
            )
            if not newer or len(newer) > MAX_INCREMENTAL_VERSIONS:
                return self._full_load(conn)
            try:
                builder = _Builder(snap.derive())
                current = snap.version if snap.version_id else None
                total = 0
                for record in newer:
                    if record.parent_hash != current:
                        raise LookupError("version chain does not continue from ours")
                    added, removed = store.parse_changes(record.changes)
                    total += len(added) + len(removed)
                    if total > MAX_INCREMENTAL_RULES:
                        raise LookupError("too many changes")
                    for rule in removed:
                        builder.remove(rule)
                    for rule in added:
                        builder.add(rule)
                    current = record.hash
            except (LookupError, PolicyError, ValueError) as exc:
                log.info("policy refresh: full reload (%s)", exc)
                return self._full_load(conn)
            last = newer[-1]
            self._snap = builder.finish(last.hash, last.id)
            return RefreshResult(True, False, last.hash, last.id)

    @classmethod
    def from_db(cls, bind: Engine | Session | Connection) -> PolicyEngine:
        engine = cls()
        engine.load(bind)
        return engine

    def start_refresher(self, bind: Engine, *, interval: float = 0.5) -> Refresher:
        """A daemon thread calling refresh(bind) every ``interval`` seconds."""
        refresher = Refresher(self, bind, interval)
        refresher.start()
        return refresher


class Refresher(threading.Thread):
    def __init__(self, engine: PolicyEngine, bind: Engine, interval: float) -> None:
        super().__init__(name="policy-refresher", daemon=True)
        self.engine, self.bind, self.interval = engine, bind, interval
        self._stop_event = threading.Event()
        self.last_error: BaseException | None = None

    def run(self) -> None:
        while not self._stop_event.is_set():
            try:
                self.engine.refresh(self.bind)
                self.last_error = None
            except Exception as exc:
                self.last_error = exc
                log.warning("policy refresh failed: %s", exc)
            self._stop_event.wait(self.interval)

    def stop(self, timeout: float | None = 5.0) -> None:
        self._stop_event.set()
        self.join(timeout)


def casbin_decide(
    enforcer: casbin.Enforcer,
    sub: str,
    tenant: str,
    obj: str,
    act: str,
    extra_roles: Iterable[str] = (),
) -> tuple[bool, tuple[str, ...] | None]:
    """The reference decision: a plain Casbin ``enforce_ex``, with the token roles added as
    ``g, sub, role, tenant`` links for the request and removed after it (not thread-safe;
    for tests and the benchmark). Returns (allowed, the rule that decided or None)."""
    added = []
    for name in extra_roles:
        role = normalize_role_name(name)
        if role is not None and enforcer.add_named_grouping_policy("g", sub, role, tenant):
            added.append(role)
    try:
        allowed, explain = enforcer.enforce_ex(sub, tenant, obj, act)
    finally:
        for role in added:
            enforcer.remove_named_grouping_policy("g", sub, role, tenant)
    return bool(allowed), tuple(explain) if explain else None
