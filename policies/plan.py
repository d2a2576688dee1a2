"""What a policy change would do, before it is made: the rules it adds and removes
(:func:`diff`), and whose access it flips (:func:`access_changes`).

"Whose access changes" is computed with the enforcer: every request the change touches is
decided by the engine before and by a what-if engine after
(:meth:`policies.enforcer.PolicyEngine.what_if`), and a flip is a request whose decision
goes from deny to allow or back. The touched requests, in the change's tenant:

- a changed ``p`` rule ``(S, tenant, O, A)``: ``(s, o, A)`` for ``S`` and every subject
  ``s`` that reaches ``S`` through the tenant's ``g`` links (before or after), and every
  object ``o`` the rule matches among ``O`` itself, the objects named in the rules ``s``
  reaches (with action ``A``) and the sources classified (``g2``) under their classes;
- a changed ``g`` rule ``(M, R, tenant)``: the same for every member ``m`` at or below
  ``M`` and every p rule (of the tenant or of every tenant) whose subject is ``R`` or a
  role above it.

An object no rule of the subject names, and in no class one does, is decided exactly as
the collection ``<kind>:*`` is, so the report stands for it with ``<kind>:*``. Objects
that no rule of the subject names but that are classified alike (the same kind and the
same classes) are decided alike: the report shows one of them, with how many others it
stands for (``alike``), so a new member of a role with a class rule does not cost a
decision per source in the class. Subjects are
those the policy knows: a role users hold through their tokens shows up as the role itself
(``role:ml-engineer``), which is what every holder gains or loses. Classification links
(``g2``) are not a tenant's to change (data source approval writes them), so a tenant's
plan holds none; they are followed as they are.

Pure: no gateway, no database.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from policies.vocabulary import GLOBAL_TENANT, Rule, parse_rule

if TYPE_CHECKING:  # engines are handed in: the command line diffs without loading Casbin
    from policies.enforcer import Decision, PolicyEngine

#: at most this many requests are decided twice; past it the report says it is incomplete.
MAX_REQUESTS = 200_000

Request = tuple[str, str, str]  # (subject, object, action)
#: "kind|classes|classes": an object's kind and the classes it is put under directly, before
#: and (when g2 links change) after
Alike = str


@dataclass(frozen=True)
class RuleDiff:
    """Rules to add and to remove, each in canonical order."""

    added: tuple[Rule, ...] = ()
    removed: tuple[Rule, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.added or self.removed)

    @property
    def size(self) -> int:
        return len(self.added) + len(self.removed)


def diff(live: Iterable[str], desired: Iterable[str] | Mapping[str, object]) -> RuleDiff:
    """From the ``live`` rule set to the ``desired`` one, both as canonical rule lines
    (policies.store; a mapping's keys); every rule of the result is validated."""
    have = set(live)
    want = desired.keys() if isinstance(desired, Mapping) else set(desired)
    return RuleDiff(
        added=tuple(sorted(_rule(line) for line in want - have)),
        removed=tuple(sorted(_rule(line) for line in have - want)),
    )


def _rule(line: str) -> Rule:
    return parse_rule(line.split(","))


@dataclass(frozen=True)
class AccessChange:
    """One request whose decision the change flips."""

    sub: str
    obj: str
    act: str
    before: Decision
    after: Decision
    #: other objects (classified alike, named by none of the subject's rules) the same flip
    #: holds for
    alike: int = 0

    @property
    def gained(self) -> bool:
        return self.after.allowed


@dataclass(frozen=True)
class AccessReport:
    changes: tuple[AccessChange, ...]
    #: requests decided before and after
    checked: int
    #: False when more than the limit of requests were touched (the rest were not decided)
    complete: bool


def _closure(start: str, links: Mapping[str, Collection[str]]) -> set[str]:
    seen = {start}
    frontier = [start]
    while frontier:
        nxt = []
        for node in frontier:
            for other in links.get(node, ()):
                if other not in seen:
                    seen.add(other)
                    nxt.append(other)
        frontier = nxt
    return seen


def _both_ways(*graphs: Mapping[str, Collection[str]]) -> tuple[dict, dict]:
    up: dict[str, set[str]] = {}
    down: dict[str, set[str]] = {}
    for graph in graphs:
        for source, targets in graph.items():
            up.setdefault(source, set()).update(targets)
            for target in targets:
                down.setdefault(target, set()).add(source)
    return up, down


class _Policy:
    """The links before and after the change, both ways, and (for the subjects asked
    for) the objects each subject's rules name per action."""

    def __init__(
        self, before: PolicyEngine, after: PolicyEngine, tenant: str, change: RuleDiff
    ) -> None:
        self.before, self.after = before, after
        self.added = change.added
        self.tenant = tenant
        ptypes = {rule.ptype for rule in (*change.added, *change.removed)}
        # After the change, links differ only where the change has rules of their kind.
        engines = (before, after) if "g" in ptypes else (before,)
        self.up, self.down = _both_ways(*(e.memberships(tenant) for e in engines))
        engines = (before, after) if "g2" in ptypes else (before,)
        self.classes = [e.classifications() for e in engines]
        self._below: dict[str, set[str]] = {}
        self._above: dict[str, set[str]] = {}
        self._alike: dict[str, Alike] = {}
        self._reach: dict[Alike, frozenset[str]] = {}
        self._groups: dict[Alike, list[str]] | None = None
        self._named: dict[tuple[str, str], tuple[set[str], Counter[Alike]]] = {}
        self.held: dict[str, set[tuple[str, str]]] = {}  # subject -> {(obj, act)}

    def below(self, subject: str) -> set[str]:
        """``subject`` and every subject that reaches it."""
        if subject not in self._below:
            self._below[subject] = _closure(subject, self.down)
        return self._below[subject]

    def above(self, subject: str) -> set[str]:
        """``subject`` and every role it reaches."""
        if subject not in self._above:
            self._above[subject] = _closure(subject, self.up)
        return self._above[subject]

    def load_rules_of(self, subjects: set[str]) -> None:
        """The rules of ``subjects`` before, and those the change adds (one scan)."""
        tenants = (self.tenant, GLOBAL_TENANT)
        added = [r.values for r in self.added if r.ptype == "p" and r.values[1] in tenants]
        for sub, _, obj, act, _ in (*self.before.grants_of(subjects, self.tenant), *added):
            if sub in subjects:
                self.held.setdefault(sub, set()).add((obj, act))

    def alike(self, obj: str) -> Alike:
        """What decides a request on an object no rule of the subject names: its kind and
        the classes it is put under directly, before and after (the same direct classes,
        the same classes reached)."""
        found = self._alike.get(obj)
        if found is None:
            kind = obj.split(":", 1)[0]
            # A class can be under a class that is under it: its classes reached depend on
            # itself too, so a class is alike to nothing else.
            which = obj if kind == "class" else kind
            # Text, not tuples of sets: thousands of these would cost the garbage collector.
            found = "|".join(
                [which, *(",".join(sorted(links.get(obj, ()))) for links in self.classes)]
            )
            self._alike[obj] = found
            if found not in self._reach:
                reached = self.before.classes_of(obj) | self.after.classes_of(obj)
                self._reach[found] = reached
        return found

    def reached(self, key: Alike) -> frozenset[str]:
        """The classes (before or after) a request on an object that is ``key`` alike
        stands for."""
        return self._reach[key]

    def classified_alike(self) -> dict[Alike, list[str]]:
        """Every classified object, grouped by what decides requests on it (sorted)."""
        if self._groups is None:
            groups: dict[Alike, list[str]] = {}
            for obj in set().union(*self.classes):
                groups.setdefault(self.alike(obj), []).append(obj)
            self._groups = {key: sorted(group) for key, group in groups.items()}
        return self._groups

    def named(self, subject: str, act: str) -> tuple[set[str], Counter[Alike]]:
        """The objects of the rules ``subject`` reaches with action ``act``, and how many of
        them each group of objects classified alike holds."""
        found = self._named.get((subject, act))
        if found is None:
            held = self.held
            objects = {o for role in self.above(subject) for o, a in held.get(role, ()) if a == act}
            found = self._named[subject, act] = (objects, Counter(map(self.alike, objects)))
        return found

    def matched(self, subject: str, obj: str, act: str) -> dict[str, int]:
        """The objects a rule on ``obj`` matches (module docstring), for ``subject``: each
        with how many other objects, classified alike and named by none of the subject's
        rules, it stands for."""
        if "*" not in obj and not obj.startswith("class:"):
            return {obj: 0}  # a concrete object: only itself (g2 links lead to classes only)
        held, taken = self.named(subject, act)
        named = held | {obj}
        wildcard = obj.endswith("*")

        def hit(key: Alike, other: str) -> bool:
            if wildcard:
                return other.startswith(obj[:-1])
            return other == obj or obj in self.reached(key)

        found = {o: 0 for o in named if hit(self.alike(o), o)}
        classes = {o for o in named if o.startswith("class:") and "*" not in o}
        if not classes:
            return found
        own = self.alike(obj) if obj not in held else None  # the rule's object, named too
        for key, group in self.classified_alike().items():
            rest = len(group) - taken[key] - (key == own)
            if rest > 0 and classes & self.reached(key) and hit(key, group[0]):
                found[next(o for o in group if o not in named)] = rest - 1
        return found


def touched_requests(
    before: PolicyEngine, after: PolicyEngine, *, tenant: str, change: RuleDiff
) -> list[tuple[Request, int]]:
    """The requests in ``tenant`` whose decision the change can flip (module docstring),
    sorted, each with how many objects classified alike it stands for."""
    policy = _Policy(before, after, tenant, change)
    touches: list[tuple[str, tuple[str, ...]]] = []  # (subject, p values)
    role_changes: list[tuple[str, set[str]]] = []  # (member, the role and the roles above)
    for rule in (*change.added, *change.removed):
        if rule.ptype == "p" and rule.values[1] in (tenant, GLOBAL_TENANT):
            touches += [(s, rule.values) for s in policy.below(rule.values[0])]
        elif rule.ptype == "g" and rule.values[2] == tenant:
            role_changes.append((rule.values[0], policy.above(rule.values[1])))
    members = {m for member, _ in role_changes for m in policy.below(member)}
    wild = {s for s, values in touches if "*" in values[2] or values[2].startswith("class:")}
    wanted = set().union(*(above for _, above in role_changes), *map(policy.above, members | wild))
    if wanted:
        policy.load_rules_of(wanted)
    for member, above in role_changes:
        rules = {(r, tenant, o, a) for r in above for o, a in policy.held.get(r, ())}
        touches += [(s, values) for s in policy.below(member) for values in rules]
    requests: dict[Request, int] = {}
    for subject, values in touches:
        obj, act = values[2], values[3]
        for o, alike in policy.matched(subject, obj, act).items():
            requests[subject, o, act] = alike
    return sorted(requests.items())


def access_changes(
    before: PolicyEngine,
    after: PolicyEngine,
    *,
    tenant: str,
    change: RuleDiff,
    limit: int = MAX_REQUESTS,
) -> AccessReport:
    """The flips the change makes in ``tenant``: ``after`` is ``before`` with ``change``
    applied (``before.what_if(change.added, change.removed)``)."""
    touched = touched_requests(before, after, tenant=tenant, change=change)[: limit + 1]
    requests = [request for request, _ in touched[:limit]]
    decided = zip(
        touched,
        before.decide_many(tenant, requests),
        after.decide_many(tenant, requests),
        strict=False,
    )
    changes = tuple(
        AccessChange(sub, obj, act, was, now, alike)
        for ((sub, obj, act), alike), was, now in decided
        if was.error is None and now.error is None and was.allowed != now.allowed
    )
    return AccessReport(changes, len(requests), len(touched) <= limit)
