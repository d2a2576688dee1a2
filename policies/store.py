"""The versioned rule store: rules in ``casbin_rule``, one ``policy_versions`` row per change.

Every function takes a Session (or a Connection) first and keyword arguments after it, works
inside the caller's transaction and never commits, so the gateway can write the audit event
of a change in the same transaction and commit once.

Changes are incremental: INSERT and DELETE of the rows concerned, never a rewrite of the
table. Writers serialise on the policy: on PostgreSQL each change first takes
``LOCK TABLE policy_versions IN SHARE ROW EXCLUSIVE MODE`` (a lock that conflicts with itself
and with writes, not with plain reads, and that works on an empty table too); on SQLite the
gateway's engine opens every transaction with BEGIN IMMEDIATE, which holds the database's
write lock. While holding it a change reads the head version, checks, writes its rows and
appends the next version, so versions form one chain (``parent_hash``) in commit order and
``policy_versions.id`` grows in commit order. Lock order: take the policy lock (call this
module) before appending to the audit chain in the same transaction.

The rule-set hash (what decisions record as ``policy_version``)
--------------------------------------------------------------
``ruleset_hash(rules) = sha256(canonical_bytes(rules)).hexdigest()`` (64 lowercase hex), where
``canonical_bytes`` is built as follows:

1. each rule becomes its line: ``ptype`` and then exactly the ptype's fields (p: 5, g: 3,
   g2: 2), joined by ``,`` with no spaces and no trailing empty fields, e.g.
   ``p,role:admin,*,policy,edit,allow``;
2. duplicate lines count once;
3. lines are sorted by their UTF-8 bytes, ascending (values are ASCII);
4. each line is followed by one ``\\n`` (0x0A), and the lines are concatenated; the result is
   UTF-8. The empty rule set is ``b""``.

Values can contain neither ``,`` nor ``\\n`` (policies.vocabulary), so the encoding is
injective. The same order (sorted lines) is the order rules are handed to Casbin, which
makes "the rule that decided" the same in every process.

``policy_versions.changes`` is canonical JSON (sorted keys, no insignificant whitespace,
UTF-8) of ``{"added": [[ptype, v0, ...], ...], "removed": [[...], ...]}``, each list in the
order above. A version with no parent (``parent_hash`` NULL) starts from the empty set.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Connection,
    and_,
    bindparam,
    delete,
    func,
    insert,
    or_,
    select,
    text,
    tuple_,
)
from sqlalchemy.orm import Session

from policies.models import CasbinRule, PolicyVersion, table_of
from policies.vocabulary import (
    FIELDS,
    PolicyError,
    PolicyValidationError,
    Rule,
    parse_rule,
    validate_filter_value,
)

SEED_PATH = Path(__file__).with_name("seed.csv")
ADMIN_ROLE = "role:admin"
MAX_LIST_LIMIT = 1000
_RULE_COLUMNS = ("ptype", "v0", "v1", "v2", "v3", "v4", "v5")
_rules_table = table_of(CasbinRule)
_versions_table = table_of(PolicyVersion)


class RuleExistsError(PolicyError):
    """Adding a rule that is already there (409)."""

    http_status = 409


class RuleNotFoundError(PolicyError):
    """Removing a rule that is not there (404)."""

    http_status = 404


class PolicyConflictError(PolicyError):
    """A change that would leave a tenant without an admin (409)."""

    http_status = 409


class VersionConflictError(PolicyError):
    """The policy is no longer at the version a change was planned against (409).
    ``expected`` is that version's id; ``current`` the head now (None: no version yet)."""

    http_status = 409
    expected: int = 0
    current: VersionRecord | None = None


class VersionNotFoundError(PolicyError):
    """No policy version with that id (404)."""

    http_status = 404


class PolicyIntegrityError(PolicyError):
    """The database holds something the store never writes (500)."""

    http_status = 500


# --------------------------------------------------------------------------- hashing


def canonical_bytes(rules: Iterable[Rule]) -> bytes:
    """The canonical encoding of a rule set; see the module docstring."""
    lines = sorted({rule.line for rule in rules})
    return "".join(line + "\n" for line in lines).encode("utf-8")


def ruleset_hash(rules: Iterable[Rule]) -> str:
    return hashlib.sha256(canonical_bytes(rules)).hexdigest()


def lines_hash(lines: Iterable[str]) -> str:
    """ruleset_hash of rules given by their lines."""
    ordered = sorted(set(lines))
    data = ("\n".join(ordered) + "\n" if ordered else "").encode("utf-8")
    return hashlib.sha256(data).hexdigest()


EMPTY_HASH = ruleset_hash(())


def canonical_changes(added: Iterable[Rule], removed: Iterable[Rule]) -> bytes:
    doc = {
        "added": [r.as_list() for r in sorted(set(added))],
        "removed": [r.as_list() for r in sorted(set(removed))],
    }
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def parse_changes(raw: bytes | memoryview | str) -> tuple[list[Rule], list[Rule]]:
    """``changes`` bytes -> (added, removed), every rule validated."""
    doc = json.loads(bytes(raw) if not isinstance(raw, str) else raw)
    if not isinstance(doc, dict) or set(doc) != {"added", "removed"}:
        raise PolicyIntegrityError("bad_changes", "policy_versions.changes is malformed")
    return [parse_rule(r) for r in doc["added"]], [parse_rule(r) for r in doc["removed"]]


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class PolicyVersionInfo:
    id: int
    hash: str
    parent_hash: str | None
    created_at: str
    actor: str
    rule_count: int
    added: tuple[Rule, ...] = ()
    removed: tuple[Rule, ...] = ()
    reason: str | None = None

    def as_dict(self, *, changes: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "hash": self.hash,
            "parent_hash": self.parent_hash,
            "created_at": self.created_at,
            "actor": self.actor,
            "rule_count": self.rule_count,
            "reason": self.reason,
        }
        if changes:
            out["changes"] = {
                "added": [r.as_list() for r in self.added],
                "removed": [r.as_list() for r in self.removed],
            }
        return out


@dataclass(frozen=True)
class StoredRule:
    id: int
    rule: Rule

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, **self.rule.fields()}


@dataclass(frozen=True)
class RulePage:
    items: list[StoredRule]
    #: pass as ``after`` for the next page; None on the last page.
    next_after: int | None


@dataclass(frozen=True)
class VersionPage:
    items: list[PolicyVersionInfo]
    #: pass as ``before`` for the next (older) page; None on the last page.
    next_before: int | None


@dataclass(frozen=True)
class VersionRecord:
    """What a poller needs of one version."""

    id: int
    hash: str
    parent_hash: str | None
    changes: bytes = field(repr=False, default=b"")


# --------------------------------------------------------------------------- helpers


def _connection(bind: Session | Connection) -> Connection:
    if isinstance(bind, Session):
        return bind.connection()
    if isinstance(bind, Connection):
        return bind
    raise TypeError("expected a Session or a Connection")


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _rule_from_row(row: Sequence[Any]) -> Rule:
    ptype = row[0]
    n = len(FIELDS.get(ptype, ()))
    if n == 0:
        raise PolicyIntegrityError("invalid_stored_rule", f"casbin_rule has ptype {ptype!r}")
    return Rule(ptype, tuple(row[1 : 1 + n]))


def _lock(conn: Connection) -> None:
    """Serialise policy writers (see the module docstring)."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("LOCK TABLE policy_versions IN SHARE ROW EXCLUSIVE MODE"))
    # SQLite: the transaction began with BEGIN IMMEDIATE (gateway.db) and holds the lock.


def _version_info(row: Any, *, with_changes: bool = True) -> PolicyVersionInfo:
    added: list[Rule] = []
    removed: list[Rule] = []
    if with_changes:
        added, removed = parse_changes(row.changes)
    return PolicyVersionInfo(
        id=row.id,
        hash=row.hash,
        parent_hash=row.parent_hash,
        created_at=row.created_at,
        actor=row.actor,
        rule_count=row.rule_count,
        added=tuple(added),
        removed=tuple(removed),
        reason=row.reason,
    )


def _check_actor(actor: Any) -> str:
    if not isinstance(actor, str) or not actor or len(actor) > 256 or not actor.isprintable():
        raise PolicyValidationError(
            "bad_actor", "actor must be 1..256 printable characters", field="actor"
        )
    return actor


def _existing(conn: Connection, rules: Sequence[Rule]) -> set[Rule]:
    """Which of ``rules`` are in casbin_rule (exact match on every column)."""
    found: set[Rule] = set()
    cols = [_rules_table.c[name] for name in _RULE_COLUMNS]
    rules = list(rules)
    for start in range(0, len(rules), 200):
        chunk = rules[start : start + 200]
        keys = [tuple(r.columns()[c] for c in _RULE_COLUMNS) for r in chunk]
        stmt = select(*cols).where(tuple_(*cols).in_(keys))
        found.update(_rule_from_row(row) for row in conn.execute(stmt))
    return found


# --------------------------------------------------------------------------- reads


def load_rules(bind: Session | Connection) -> list[Rule]:
    """Every rule in casbin_rule, validated, in canonical order."""
    conn = _connection(bind)
    rows = conn.execute(text("SELECT id, ptype, v0, v1, v2, v3, v4, v5 FROM casbin_rule"))
    rules = []
    for row in rows:
        try:
            rules.append(parse_rule(_rule_from_row(tuple(row)[1:])))
        except PolicyError as exc:
            raise PolicyIntegrityError(
                "invalid_stored_rule", f"casbin_rule row {row[0]} is invalid: {exc.message}"
            ) from exc
    rules.sort()
    return rules


_LINES_SQL = text(
    "SELECT CASE ptype"
    " WHEN 'p' THEN 'p,' || v0 || ',' || v1 || ',' || v2 || ',' || v3 || ',' || v4"
    " WHEN 'g' THEN 'g,' || v0 || ',' || v1 || ',' || v2"
    " WHEN 'g2' THEN 'g2,' || v0 || ',' || v1"
    " END FROM casbin_rule"
)


def _all_lines(conn: Connection) -> list[str]:
    """The canonical line of every stored rule, unvalidated (for hashing after a change)."""
    lines: list[str | None] = list(conn.execute(_LINES_SQL).scalars().all())
    if any(line is None for line in lines):
        raise PolicyIntegrityError("invalid_stored_rule", "casbin_rule has an unknown ptype")
    return [line for line in lines if line is not None]


def head_version(bind: Session | Connection) -> VersionRecord | None:
    """The newest version (id, hash, parent), without its changes; None before the first."""
    conn = _connection(bind)
    row = conn.execute(
        text("SELECT id, hash, parent_hash FROM policy_versions ORDER BY id DESC LIMIT 1")
    ).first()
    return None if row is None else VersionRecord(row.id, row.hash, row.parent_hash)


def versions_after(bind: Session | Connection, *, after_id: int, limit: int) -> list[VersionRecord]:
    """Versions with id > after_id, oldest first, at most ``limit``, with their changes."""
    conn = _connection(bind)
    rows = conn.execute(
        text(
            "SELECT id, hash, parent_hash, changes FROM policy_versions "
            "WHERE id > :after ORDER BY id LIMIT :limit"
        ),
        {"after": after_id, "limit": limit},
    )
    return [VersionRecord(r.id, r.hash, r.parent_hash, bytes(r.changes)) for r in rows]


def get_version(
    bind: Session | Connection, *, id: int | None = None, hash: str | None = None
) -> PolicyVersionInfo | None:
    """One version by id, or the newest with the given hash."""
    conn = _connection(bind)
    t = _versions_table
    stmt = select(t)
    if id is not None:
        stmt = stmt.where(t.c.id == id)
    elif hash is not None:
        stmt = stmt.where(t.c.hash == hash).order_by(t.c.id.desc()).limit(1)
    else:
        stmt = stmt.order_by(t.c.id.desc()).limit(1)
    row = conn.execute(stmt).first()
    return None if row is None else _version_info(row)


def list_versions(
    bind: Session | Connection,
    *,
    limit: int = 50,
    before: int | None = None,
    with_changes: bool = True,
) -> VersionPage:
    """Versions, newest first; ``before`` is the cursor from the previous page."""
    limit = _check_limit(limit)
    conn = _connection(bind)
    t = _versions_table
    stmt = select(t).order_by(t.c.id.desc()).limit(limit + 1)
    if before is not None:
        stmt = stmt.where(t.c.id < int(before))
    rows = list(conn.execute(stmt))
    items = [_version_info(r, with_changes=with_changes) for r in rows[:limit]]
    return VersionPage(items, items[-1].id if len(rows) > limit else None)


def _check_limit(limit: Any) -> int:
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_LIST_LIMIT:
        raise PolicyValidationError(
            "bad_limit", f"limit must be 1..{MAX_LIST_LIMIT}", field="limit"
        )
    return limit


#: filter name -> {ptype: column}. ``sub`` also matches a g rule's member.
_FILTER_COLUMNS: dict[str, dict[str, str]] = {
    "sub": {"p": "v0", "g": "v0"},
    "member": {"g": "v0"},
    "role": {"g": "v1"},
    "tenant": {"p": "v1", "g": "v2"},
    "obj": {"p": "v2", "g2": "v0"},
    "act": {"p": "v3"},
    "eft": {"p": "v4"},
    "class": {"g2": "v1"},
}


def list_rules(
    bind: Session | Connection,
    *,
    ptype: str | None = None,
    sub: str | None = None,
    member: str | None = None,
    role: str | None = None,
    tenant: str | None = None,
    obj: str | None = None,
    act: str | None = None,
    eft: str | None = None,
    class_: str | None = None,
    limit: int = 100,
    after: int | None = None,
) -> RulePage:
    """Rules in id order, filtered by exact field values. A filter applies to the ptypes that
    have that field (``sub`` matches p.sub and g.member; ``tenant`` p.tenant and g.tenant;
    ``obj`` p.obj and g2.obj); rules of a ptype without a filtered field are left out.
    ``after`` is the cursor from the previous page."""
    limit = _check_limit(limit)
    given = {
        name: value
        for name, value in {
            "sub": sub,
            "member": member,
            "role": role,
            "tenant": tenant,
            "obj": obj,
            "act": act,
            "eft": eft,
            "class": class_,
        }.items()
        if value is not None
    }
    for name, value in given.items():
        validate_filter_value(value, name)
    if ptype is not None and ptype not in FIELDS:
        raise PolicyValidationError("bad_ptype", "ptype must be one of p, g, g2", field="ptype")
    t = _rules_table
    branches = []
    for pt in [ptype] if ptype else sorted(FIELDS):
        conds = [t.c.ptype == pt]
        for name, value in given.items():
            column = _FILTER_COLUMNS[name].get(pt)
            if column is None:
                break
            conds.append(t.c[column] == value)
        else:
            branches.append(and_(*conds))
    if not branches:
        return RulePage([], None)
    stmt = select(t).where(or_(*branches)).order_by(t.c.id).limit(limit + 1)
    if after is not None:
        stmt = stmt.where(t.c.id > int(after))
    rows = list(_connection(bind).execute(stmt))
    items = [
        StoredRule(r.id, _rule_from_row((r.ptype, r.v0, r.v1, r.v2, r.v3, r.v4, r.v5)))
        for r in rows[:limit]
    ]
    return RulePage(items, items[-1].id if len(rows) > limit else None)


def diff_versions(
    bind: Session | Connection, *, from_id: int, to_id: int
) -> tuple[list[Rule], list[Rule]]:
    """The rules added and removed (each in canonical order) going from version ``from_id``
    to version ``to_id`` (either may be the older; 0 is the empty set before the first
    version), composed from the versions' stored ``changes``. Raises VersionNotFoundError."""
    conn = _connection(bind)
    for name, wanted in (("from", from_id), ("to", to_id)):
        found = conn.execute(
            text("SELECT 1 FROM policy_versions WHERE id = :id"), {"id": wanted}
        ).first()
        if wanted != 0 and found is None:
            raise VersionNotFoundError(
                "policy_version_not_found", f"no policy version {wanted}", field=name
            )
    low, high = sorted((from_id, to_id))
    rows = conn.execute(
        text("SELECT changes FROM policy_versions WHERE id > :low AND id <= :high ORDER BY id"),
        {"low": low, "high": high},
    )
    added: set[Rule] = set()
    removed: set[Rule] = set()
    for (changes,) in rows:
        step_added, step_removed = parse_changes(changes)
        for rule in step_removed:
            if rule in added:
                added.discard(rule)
            else:
                removed.add(rule)
        for rule in step_added:
            if rule in removed:
                removed.discard(rule)
            else:
                added.add(rule)
    if from_id > to_id:
        added, removed = removed, added
    return sorted(added), sorted(removed)


# --------------------------------------------------------------------------- changes


def _parse_all(rules: Iterable[Any], what: str) -> list[Rule]:
    if isinstance(rules, str | bytes | Rule):
        raise PolicyValidationError("field_count", f"{what} must be a list of rules", field=what)
    parsed: list[Rule] = []
    seen: set[Rule] = set()
    for rule in rules:
        r = parse_rule(rule)
        if r in seen:
            raise PolicyValidationError(
                "duplicate_rule", f"{r.line} appears twice in {what}", field=what
            )
        seen.add(r)
        parsed.append(r)
    return parsed


def _admin_count(conn: Connection, tenant: str) -> int:
    t = _rules_table
    stmt = select(func.count()).where(
        t.c.ptype == "g", t.c.v1 == ADMIN_ROLE, t.c.v2 == tenant, t.c.v0.startswith("user:")
    )
    return conn.execute(stmt).scalar_one()


def _is_user_admin(rule: Rule) -> bool:
    return rule.ptype == "g" and rule.values[1] == ADMIN_ROLE and rule.values[0].startswith("user:")


def change_rules(
    session: Session | Connection,
    *,
    actor: str,
    add: Iterable[Any] = (),
    remove: Iterable[Any] = (),
    reason: str | None = None,
    expect_version: int | None = None,
) -> PolicyVersionInfo:
    """Add and remove rules in one change; returns the new version (not committed).

    Raises PolicyValidationError (a bad rule; a rule twice; a rule both added and removed; an
    empty change), RuleExistsError (adding a rule that is there), RuleNotFoundError
    (removing one that is not), PolicyConflictError (reason ``last_admin``: the change would
    leave a tenant that has a ``g, user:*, role:admin, <tenant>`` membership with none),
    VersionConflictError (``expect_version`` given and the head version's id is another;
    0 stands for "no version yet"). Nothing is written when it raises."""
    actor = _check_actor(actor)
    if reason is not None and (not isinstance(reason, str) or len(reason) > 2000):
        raise PolicyValidationError(
            "bad_reason", "reason must be text of at most 2000 characters", field="reason"
        )
    added, removed = _parse_change(add, remove)
    conn = _connection(session)
    _lock(conn)
    head = head_version(conn)
    _check_expected(head, expect_version)
    _check_against(conn, added, removed)
    return _write(conn, head=head, added=added, removed=removed, actor=actor, reason=reason)


def check_change(
    bind: Session | Connection,
    *,
    add: Iterable[Any] = (),
    remove: Iterable[Any] = (),
    expect_version: int | None = None,
    holds: Callable[[Rule], bool] | None = None,
) -> tuple[VersionRecord | None, list[Rule], list[Rule]]:
    """What :func:`change_rules` would refuse, checked against the rules as they are now,
    without taking the lock or writing anything (a plan). ``holds`` answers whether a rule
    is there in place of the database (an engine known to be at the head version: quicker
    for large changes). Returns the head version and the parsed rules to add and remove."""
    added, removed = _parse_change(add, remove)
    conn = _connection(bind)
    head = head_version(conn)
    _check_expected(head, expect_version)
    _check_against(conn, added, removed, holds=holds)
    return head, added, removed


def _parse_change(add: Iterable[Any], remove: Iterable[Any]) -> tuple[list[Rule], list[Rule]]:
    added = _parse_all(add, "add")
    removed = _parse_all(remove, "remove")
    both = set(added) & set(removed)
    if both:
        r = sorted(both)[0]
        raise PolicyValidationError(
            "rule_in_add_and_remove", f"{r.line} is both added and removed", field="remove"
        )
    if not added and not removed:
        raise PolicyValidationError("empty_change", "nothing to add or remove", field="add")
    return added, removed


def _check_expected(head: VersionRecord | None, expect_version: int | None) -> None:
    current = head.id if head is not None else 0
    if expect_version is None or expect_version == current:
        return
    now = f"version {current} ({head.hash[:12]})" if head is not None else "no version yet"
    error = VersionConflictError(
        "policy_version_conflict",
        f"the policy is at {now}, not at version {expect_version} as expected: plan again",
        field="expect_version",
    )
    error.expected, error.current = expect_version, head
    raise error


def _check_against(
    conn: Connection,
    added: Sequence[Rule],
    removed: Sequence[Rule],
    *,
    holds: Callable[[Rule], bool] | None = None,
) -> None:
    changed = [*added, *removed]
    present = _existing(conn, changed) if holds is None else set(filter(holds, changed))
    for r in added:
        if r in present:
            raise RuleExistsError(
                "rule_exists", f"rule already exists: {r.line}", field="add", rule=r
            )
    for r in removed:
        if r not in present:
            raise RuleNotFoundError(
                "rule_not_found", f"no such rule: {r.line}", field="remove", rule=r
            )
    for tenant in sorted({r.values[2] for r in removed if _is_user_admin(r)}):
        lost = sum(1 for r in removed if _is_user_admin(r) and r.values[2] == tenant)
        gained = sum(1 for r in added if _is_user_admin(r) and r.values[2] == tenant)
        if _admin_count(conn, tenant) - lost + gained <= 0:
            raise PolicyConflictError(
                "last_admin",
                f"the change would leave tenant {tenant!r} without an admin",
                field="tenant",
            )


def _write(
    conn: Connection,
    *,
    head: VersionRecord | None,
    added: Sequence[Rule],
    removed: Sequence[Rule],
    actor: str,
    reason: str | None,
    recorded_added: Sequence[Rule] | None = None,
) -> PolicyVersionInfo:
    t = _rules_table
    if removed:
        conn.execute(
            delete(t).where(*(t.c[c] == bindparam(f"b_{c}") for c in _RULE_COLUMNS)),
            [{f"b_{c}": v for c, v in r.columns().items()} for r in removed],
        )
    if added:
        conn.execute(insert(t), [r.columns() for r in added])
    lines = _all_lines(conn)
    new_hash = lines_hash(lines)
    rec_added = tuple(sorted(recorded_added if recorded_added is not None else added))
    rec_removed = tuple(sorted(removed))
    created_at = _now()
    parent_hash = head.hash if head else None
    row = {
        "hash": new_hash,
        "parent_hash": parent_hash,
        "created_at": created_at,
        "actor": actor,
        "rule_count": len(lines),
        "changes": canonical_changes(rec_added, rec_removed),
        "reason": reason,
    }
    new_id = conn.execute(insert(_versions_table).returning(_versions_table.c.id), row).scalar_one()
    return PolicyVersionInfo(
        id=new_id,
        hash=new_hash,
        parent_hash=parent_hash,
        created_at=created_at,
        actor=actor,
        rule_count=len(lines),
        added=rec_added,
        removed=rec_removed,
        reason=reason,
    )


def add_rules(
    session: Session | Connection, *, rules: Iterable[Any], actor: str, reason: str | None = None
) -> PolicyVersionInfo:
    return change_rules(session, actor=actor, add=rules, reason=reason)


def remove_rules(
    session: Session | Connection, *, rules: Iterable[Any], actor: str, reason: str | None = None
) -> PolicyVersionInfo:
    return change_rules(session, actor=actor, remove=rules, reason=reason)


def add_rule(
    session: Session | Connection, *, rule: Any, actor: str, reason: str | None = None
) -> PolicyVersionInfo:
    return change_rules(session, actor=actor, add=[rule], reason=reason)


def remove_rule(
    session: Session | Connection, *, rule: Any, actor: str, reason: str | None = None
) -> PolicyVersionInfo:
    return change_rules(session, actor=actor, remove=[rule], reason=reason)


# --------------------------------------------------------------------------- seed


def read_seed(path: Path | str = SEED_PATH) -> list[Rule]:
    """The rules of a seed CSV (``ptype, v0, ...`` a line; ``#`` comments), validated."""
    rules: list[Rule] = []
    for lineno, raw in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        try:
            rules.append(parse_rule([token.strip() for token in line.split(",")]))
        except PolicyValidationError as exc:
            raise PolicyValidationError(
                exc.reason, f"{path}:{lineno}: {exc.message}", field=exc.field
            ) from exc
    return _parse_all(rules, "seed")


def seed_if_empty(
    session: Session | Connection,
    *,
    actor: str = "system:seed",
    path: Path | str = SEED_PATH,
    rules: Iterable[Any] | None = None,
) -> PolicyVersionInfo | None:
    """On a database without any policy version, add the seed rules (``rules`` or the CSV at
    ``path``) and create the first version, whose ``changes`` lists every rule then present
    as added (its parent is the empty set). Returns None when a version already exists."""
    actor = _check_actor(actor)
    seed = _parse_all(rules, "rules") if rules is not None else read_seed(path)
    conn = _connection(session)
    _lock(conn)
    if head_version(conn) is not None:
        return None
    present = set(load_rules(conn))
    to_add = [r for r in seed if r not in present]
    return _write(
        conn,
        head=None,
        added=to_add,
        removed=(),
        actor=actor,
        reason="seed",
        recorded_added=sorted(present | set(to_add)),
    )
