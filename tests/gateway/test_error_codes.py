"""The catalogue of error codes (gateway.error_codes) and the code that raises them agree.

The source is read with ``ast``, never imported or run, so this is fast and sees every
branch. What the walk collects, each with where it appears (``api`` or ``job``) and, where the
site says so, the HTTP status:

* in ``gateway/``: every string literal passed as ``code=`` to a call, or as the code
  argument of a function that hands its ``code`` on (``_checked_values``, ``run._fail``); the
  class-level ``code`` of every ``GatewayError`` subclass (what a raise without ``code=``
  answers with); what the error handlers write; ``JobRefused(...)``, ``fail_job(code=...)``,
  the executors' ``{"code": ...}`` refusals and ``_ERROR_CODES``;
* the pass-throughs: ``gateway.security.Reason`` (401, or the status deps.py answers the
  key-set error with), every ``IngestError`` subclass's ``code`` (the status
  ``files.service._ingest_error`` maps it to), every refused ``GateResult`` code in
  ``ingest/gates.py``, and every policy reason (the first argument of a ``PolicyError``
  subclass or of ``vocabulary._fail``; the status is the class's ``http_status``).

A ``code=`` that is not a literal must be one of ``PASS_THROUGHS``: a new computed code fails
here until its source is walked.
"""

from __future__ import annotations

import ast
import functools
import re
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import structlog

from gateway import error_codes
from gateway.errors import GatewayError, NotFound

ROOT = Path(__file__).resolve().parents[2]

# At least what the walk finds today, by source: a walk that stops finding codes fails here
# rather than passing with nothing to compare.
MIN_FOUND = {
    "gateway": 89,
    "executors": 8,
    "security": 13,
    "ingest": 4,
    "ingest gates": 2,
    "policy": 28,
}
MIN_DISTINCT = {"api": 127, "job": 14}

# Every computed ``code=`` in gateway/ (file, expression) and where its values come from.
PASS_THROUGHS = {
    ("gateway/deps.py", "exc.reason"): "security.Reason",
    ("gateway/error_handlers.py", "exc.code"): "a GatewayError's code",
    ("gateway/inference/service.py", "exc.code"): "a GatewayError's code, its bytes hashed",
    ("gateway/error_handlers.py", "code"): "_http_error's status table",
    ("gateway/executors/run.py", "refused.code"): "JobRefused codes",
    ("gateway/executors/run.py", "code"): "_describe: _ERROR_CODES and its default",
    ("gateway/files/service.py", "exc.code"): "IngestError codes",
    ("gateway/jobs/gates.py", "result.code"): "GateResult codes",
    ("gateway/jobs/gates.py", "result.gate"): "GateResult gate names, when a refusal has no code",
    ("gateway/policies_api/service.py", "exc.reason"): "policy reasons",
    ("gateway/console/errors.py", "exc.code"): "a GatewayError's code, shown as a page",
    ("gateway/console/errors.py", "code"): "error_page's callers: codes walked elsewhere",
    # an OAuth authorization code, not an error code
    ("gateway/console/oidc.py", "code"): "the provider's authorization code",
    ("gateway/console/routes/auth.py", "code"): "the provider's authorization code",
}

# The command line and its HTTP client answer nothing: they print the gateway's codes
# (and a few of their own, documented in the README's "Command line for users").
CLIENT_SIDE = ("gateway/cli/", "gateway/client/")

_LOGGER_METHODS = {"debug", "info", "warning", "error", "exception", "critical"}


@dataclass(frozen=True)
class Found:
    code: str
    where: str  # "api" | "job"
    status: int | None  # the HTTP status, when the site names it
    site: str
    source: str


@dataclass(frozen=True)
class Target:
    """A callee that takes a code: where the code ends up, and at which position it may be
    passed without its keyword."""

    where: str
    status: int | None = None
    position: int | None = None


@dataclass(frozen=True)
class ClassInfo:
    parent: str | None
    attrs: dict


# --- reading the source -----------------------------------------------------------------


@functools.cache
def _tree(rel: str) -> ast.Module:
    return ast.parse((ROOT / rel).read_text(encoding="utf-8"), rel)


@functools.cache
def _parents(rel: str) -> dict[ast.AST, ast.AST]:
    return {child: node for node in ast.walk(_tree(rel)) for child in ast.iter_child_nodes(node)}


def _modules(package: str) -> list[str]:
    return sorted(path.relative_to(ROOT).as_posix() for path in (ROOT / package).rglob("*.py"))


def _name(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def _literals(node: ast.expr) -> tuple[set[str], list[ast.expr]]:
    """The strings ``node`` may evaluate to, and the parts of it that are not literals."""
    if isinstance(node, ast.Constant):
        return ({node.value} if isinstance(node.value, str) else set()), []
    if isinstance(node, ast.IfExp):
        parts = [node.body, node.orelse]
    elif isinstance(node, ast.BoolOp):
        parts = node.values
    else:
        return set(), [node]
    strings: set[str] = set()
    computed: list[ast.expr] = []
    for part in parts:
        more, rest = _literals(part)
        strings |= more
        computed += rest
    return strings, computed


def _class_attrs(node: ast.ClassDef, names: tuple[str, ...]) -> dict:
    attrs = {}
    for statement in node.body:
        if isinstance(statement, ast.Assign):
            targets, value = statement.targets, statement.value
        elif isinstance(statement, ast.AnnAssign) and statement.value is not None:
            targets, value = [statement.target], statement.value
        else:
            continue
        for target in targets:
            if (
                isinstance(target, ast.Name)
                and target.id in names
                and isinstance(value, ast.Constant)
            ):
                attrs[target.id] = value.value
    return attrs


@functools.cache
def _subclasses(package: str, root: str, names: tuple[str, ...]) -> dict[str, ClassInfo]:
    """The classes of ``package`` that derive from ``root`` (root included), with the
    class-level constants ``names``, inherited."""
    defined: dict[str, tuple[list[str | None], dict]] = {}
    for rel in _modules(package):
        for node in ast.walk(_tree(rel)):
            if isinstance(node, ast.ClassDef):
                defined[node.name] = (
                    [_name(base) for base in node.bases],
                    _class_attrs(node, names),
                )
    found = {root: ClassInfo(None, defined[root][1])}
    grown = True
    while grown:
        grown = False
        for name, (bases, own) in defined.items():
            parent = next((base for base in bases if base in found), None)
            if name not in found and parent is not None:
                found[name] = ClassInfo(parent, {**found[parent].attrs, **own})
                grown = True
    return found


def _gateway_errors() -> dict[str, ClassInfo]:
    return _subclasses("gateway", "GatewayError", ("code", "status_code"))


def _site(rel: str, node: ast.AST) -> str:
    return f"{rel}:{getattr(node, 'lineno', '?')}"


def _enclosing(rel: str, node: ast.AST, kinds: tuple[type, ...]) -> ast.AST | None:
    parents = _parents(rel)
    while node in parents:
        node = parents[node]
        if isinstance(node, kinds):
            return node
    return None


# --- gateway/: literal codes at the call sites ----------------------------------------------


def _seed_targets() -> dict[str, Target]:
    targets = {
        name: Target("api", info.attrs.get("status_code"))
        for name, info in _gateway_errors().items()
    }
    targets["error_body"] = Target("api")
    targets["fail_job"] = Target("job")
    targets["JobRefused"] = Target("job", position=0)
    return targets


def _code_argument(call: ast.Call, target: Target | None) -> ast.expr | None:
    for keyword in call.keywords:
        if keyword.arg == "code":
            return keyword.value
    if target is not None and target.position is not None and len(call.args) > target.position:
        return call.args[target.position]
    return None


def _forwarders(rel: str, seeds: dict[str, Target]) -> tuple[dict[str, Target], set[int]]:
    """Functions of the module that hand their own ``code`` parameter on to a target, and the
    calls that do the handing (their code is the caller's, collected at the caller)."""
    found: dict[str, Target] = {}
    handing: set[int] = set()
    functions = [
        node
        for node in ast.walk(_tree(rel))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and "code" in [arg.arg for arg in ast.walk(node.args) if isinstance(arg, ast.arg)]
    ]
    size = -1
    while size != len(found):  # until no new forwarder: one may hand on to another
        size = len(found)
        for function in functions:
            positional = [arg.arg for arg in function.args.posonlyargs + function.args.args]
            for call in (n for n in ast.walk(function) if isinstance(n, ast.Call)):
                target = found.get(_name(call.func) or "") or seeds.get(_name(call.func) or "")
                value = _code_argument(call, target)
                if target is not None and isinstance(value, ast.Name) and value.id == "code":
                    position = positional.index("code") if "code" in positional else None
                    found[function.name] = Target(target.where, target.status, position)
                    handing.add(id(call))
    return found, handing


def _parameter_defaults(rel: str, forwarders: dict[str, Target]) -> Iterator[Found]:
    """A forwarder's default code is answered whenever a caller names none."""
    for node in ast.walk(_tree(rel)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name in forwarders:
            args = node.args
            pairs = list(zip(reversed(args.args), reversed(args.defaults), strict=False))
            pairs += [(a, d) for a, d in zip(args.kwonlyargs, args.kw_defaults, strict=True) if d]
            for arg, default in pairs:
                if arg.arg == "code" and isinstance(default, ast.Constant):
                    target = forwarders[node.name]
                    yield Found(
                        default.value, target.where, target.status, _site(rel, node), "gateway"
                    )


def _fed_list(rel: str, call: ast.Call, node: ast.expr) -> set[str] | None:
    """``codes[0]`` where the enclosing function fills ``codes`` with ``.append("...")``."""
    if not (isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name)):
        return None
    function = _enclosing(rel, call, (ast.FunctionDef, ast.AsyncFunctionDef))
    fed = {
        arg.value
        for n in ast.walk(function or _tree(rel))
        if isinstance(n, ast.Call)
        and isinstance(n.func, ast.Attribute)
        and n.func.attr == "append"
        and _name(n.func.value) == node.value.id
        for arg in n.args
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str)
    }
    return fed or None


def _response_status(rel: str, call: ast.Call) -> int | None:
    """The ``status_code=`` of the JSONResponse an ``error_body(...)`` is written into."""
    response = _enclosing(rel, call, (ast.Call,))
    while response is not None and _name(response.func) != "JSONResponse":
        response = _enclosing(rel, response, (ast.Call,))
    if response is None:
        return None
    for keyword in response.keywords:
        if keyword.arg == "status_code" and isinstance(keyword.value, ast.Constant):
            return keyword.value.value
    return None


def _is_log_call(call: ast.Call) -> bool:
    func = call.func
    return (
        isinstance(func, ast.Attribute)
        and func.attr in _LOGGER_METHODS
        and _name(func.value) in {"log", "logger"}
    )


def _call_codes(rel: str, computed: list[tuple[str, str, int | None]]) -> Iterator[Found]:
    seeds = _seed_targets()
    forwarders, handing = _forwarders(rel, seeds)
    yield from _parameter_defaults(rel, forwarders)
    errors = _gateway_errors()
    for call in (n for n in ast.walk(_tree(rel)) if isinstance(n, ast.Call)):
        name = _name(call.func) or ""
        target = forwarders.get(name) or seeds.get(name)
        if id(call) in handing or _is_log_call(call):
            continue
        value = _code_argument(call, target)
        where = target.where if target else "api"
        status = target.status if target else None
        if name == "error_body":
            status = _response_status(rel, call)
        if value is None:
            if name in errors and not any(k.arg is None for k in call.keywords):
                yield Found(errors[name].attrs["code"], "api", status, _site(rel, call), "gateway")
            continue
        strings, rest = _literals(value)
        for part in rest:
            if (
                isinstance(part, ast.Attribute)
                and part.attr == "code"
                and _name(part.value) in errors
            ):
                info = errors[_name(part.value) or ""]
                strings.add(info.attrs["code"])
                status = status or info.attrs.get("status_code")
            elif (fed := _fed_list(rel, call, part)) is not None:
                strings |= fed
            else:
                computed.append((rel, ast.unparse(part), status))
        for code in strings:
            yield Found(code, where, status, _site(rel, call), "gateway")


def _class_defaults() -> Iterator[Found]:
    for name, info in _gateway_errors().items():
        status = info.attrs.get("status_code")
        yield Found(info.attrs["code"], "api", status, f"class {name}", "gateway")


def _handler_tables() -> Iterator[Found]:
    """``{404: "not_found", ...}.get(status, "http_error")`` in the error handlers."""
    rel = "gateway/error_handlers.py"
    for node in ast.walk(_tree(rel)):
        if not isinstance(node, ast.Dict) or not node.keys:
            continue
        pairs = list(zip(node.keys, node.values, strict=True))
        if all(isinstance(k, ast.Constant) and isinstance(k.value, int) for k, _ in pairs):
            for key, value in pairs:
                yield Found(value.value, "api", key.value, _site(rel, node), "gateway")
            call = _parents(rel).get(_parents(rel).get(node))
            if isinstance(call, ast.Call) and len(call.args) == 2:
                for code in _literals(call.args[1])[0]:
                    yield Found(code, "api", None, _site(rel, node), "gateway")


def _executor_tables() -> Iterator[Found]:
    """The executors' ``{"code": ...}`` refusals and ``_ERROR_CODES`` (with its default)."""
    for rel in _modules("gateway/executors"):
        for node in ast.walk(_tree(rel)):
            if isinstance(node, ast.Dict):
                for key, value in zip(node.keys, node.values, strict=True):
                    if isinstance(key, ast.Constant) and key.value == "code":
                        for code in _literals(value)[0]:
                            yield Found(code, "job", None, _site(rel, node), "executors")
            tables: list[ast.expr] = []
            if isinstance(node, ast.Assign) and any(
                _name(t) == "_ERROR_CODES" for t in node.targets
            ):
                tables = list(node.value.values) if isinstance(node.value, ast.Dict) else []
            elif (
                isinstance(node, ast.Call)
                and _name(node.func) == "get"
                and _name(getattr(node.func, "value", None)) == "_ERROR_CODES"
            ):
                tables = node.args[1:]
            for entry in tables:
                if isinstance(entry, ast.Tuple) and entry.elts:
                    for code in _literals(entry.elts[0])[0]:
                        yield Found(code, "job", None, _site(rel, node), "executors")


# --- the pass-throughs ------------------------------------------------------------------------


def _security_codes() -> Iterator[Found]:
    """``Reason`` members; the status is what deps.py answers the exception carrying them with
    (KeySetUnavailableError carries jwks_unavailable, every other AuthenticationError)."""
    tree = _tree("gateway/security.py")
    members: dict[str, str] = {}
    carried_by: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name == "Reason":
            members = {
                s.targets[0].id: s.value.value
                for s in node.body
                if isinstance(s, ast.Assign) and isinstance(s.value, ast.Constant)
            }
        elif isinstance(node, ast.ClassDef) and "AuthenticationError" in map(_name, node.bases):
            for ref in ast.walk(node):
                if isinstance(ref, ast.Attribute) and _name(ref.value) == "Reason":
                    carried_by[ref.attr] = node.name
    answered = _answered_by_handlers("gateway/deps.py", "reason")
    for member, code in members.items():
        status = answered.get(carried_by.get(member, "AuthenticationError"))
        yield Found(code, "api", status, f"gateway/security.py: Reason.{member}", "security")


def _answered_by_handlers(rel: str, attr: str) -> dict[str, int]:
    """exception class -> the status of the GatewayError raised with ``code=exc.<attr>`` in
    its ``except`` clause."""
    errors = _gateway_errors()
    answered: dict[str, int] = {}
    for handler in ast.walk(_tree(rel)):
        if not isinstance(handler, ast.ExceptHandler) or handler.type is None:
            continue
        for call in (n for n in ast.walk(handler) if isinstance(n, ast.Call)):
            value = _code_argument(call, None)
            if (
                isinstance(value, ast.Attribute)
                and value.attr == attr
                and _name(call.func) in errors
            ):
                status = errors[_name(call.func) or ""].attrs["status_code"]
                answered[_name(handler.type) or ""] = status
    return answered


def _ingest_statuses() -> tuple[dict[str, int], int]:
    """``files.service._ingest_error``: ingest class -> status, and the status of the rest."""
    rel = "gateway/files/service.py"
    tree = _tree(rel)
    aliases = {
        alias.asname or alias.name: alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("ingest")
        for alias in node.names
    }
    errors = _gateway_errors()
    function = next(
        n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "_ingest_error"
    )
    mapped: dict[str, int] = {}
    default = None
    for statement in function.body:
        if isinstance(statement, ast.If) and isinstance(statement.test, ast.Call):
            checked = _name(statement.test.args[1])
            returned = statement.body[0]
            if isinstance(returned, ast.Return) and isinstance(returned.value, ast.Call):
                name = _name(returned.value.func) or ""
                mapped[aliases.get(checked or "", checked or "")] = errors[name].attrs[
                    "status_code"
                ]
        elif isinstance(statement, ast.Return) and isinstance(statement.value, ast.Call):
            default = errors[_name(statement.value.func) or ""].attrs["status_code"]
    assert mapped and default is not None, "files.service._ingest_error changed shape"
    return mapped, default


def _ingest_codes() -> Iterator[Found]:
    classes = _subclasses("ingest", "IngestError", ("code",))
    mapped, default = _ingest_statuses()
    for name, info in classes.items():
        ancestry: str | None = name
        while ancestry is not None and ancestry not in mapped:
            ancestry = classes[ancestry].parent
        status = mapped[ancestry] if ancestry is not None else default
        yield Found(info.attrs["code"], "api", status, f"ingest: class {name}", "ingest")


def _ingest_gate_codes(statuses: set[int | None]) -> Iterator[Found]:
    """The code of every refused ``GateResult(gate, passed, code, message, ...)``."""
    rel = "ingest/gates.py"
    for call in (n for n in ast.walk(_tree(rel)) if isinstance(n, ast.Call)):
        if _name(call.func) != "GateResult":
            continue
        value = next((k.value for k in call.keywords if k.arg == "code"), None)
        if value is None and len(call.args) > 2:
            value = call.args[2]
        for code in _literals(value)[0] if value is not None else ():
            for status in statuses:
                yield Found(code, "api", status, _site(rel, call), "ingest gates")


def _policy_codes() -> Iterator[Found]:
    """The first argument of every PolicyError subclass built in policies/ (or of a function
    that hands its ``reason`` on to one, like vocabulary._fail)."""
    classes = _subclasses("policies", "PolicyError", ("http_status",))
    statuses = {name: info.attrs["http_status"] for name, info in classes.items()}
    for rel in _modules("policies"):
        for function in ast.walk(_tree(rel)):
            if isinstance(function, ast.FunctionDef) and function.args.args:
                first = function.args.args[0].arg
                for call in (n for n in ast.walk(function) if isinstance(n, ast.Call)):
                    arg = call.args[0] if call.args else None
                    if (
                        _name(call.func) in statuses
                        and isinstance(arg, ast.Name)
                        and arg.id == first
                    ):
                        statuses[function.name] = statuses[_name(call.func) or ""]
    for rel in _modules("policies"):
        for call in (n for n in ast.walk(_tree(rel)) if isinstance(n, ast.Call)):
            if _name(call.func) in statuses and call.args:
                for code in _literals(call.args[0])[0]:
                    yield Found(
                        code, "api", statuses[_name(call.func) or ""], _site(rel, call), "policy"
                    )


# --- everything -------------------------------------------------------------------------------


@functools.cache
def walk() -> tuple[tuple[Found, ...], tuple[tuple[str, str, int | None], ...]]:
    """Every code the source produces, and the computed ``code=`` sites (file, expression,
    status)."""
    computed: list[tuple[str, str, int | None]] = []
    found: list[Found] = []
    for rel in (m for m in _modules("gateway") if not m.startswith(CLIENT_SIDE)):
        found += _call_codes(rel, computed)
    found += _class_defaults()
    found += _handler_tables()
    found += _executor_tables()
    found += _security_codes()
    found += _ingest_codes()
    gate_statuses = {status for rel, expr, status in computed if expr == "result.code"}
    found += _ingest_gate_codes(gate_statuses)
    found += _policy_codes()
    return tuple(found), tuple(computed)


def _found_by_code() -> dict[str, list[Found]]:
    by_code: dict[str, list[Found]] = defaultdict(list)
    for found in walk()[0]:
        by_code[found.code].append(found)
    return by_code


# --- the tests ----------------------------------------------------------------------------------


def test_the_walk_finds_codes_in_every_source():
    found, _ = walk()
    per_source: dict[str, set[str]] = defaultdict(set)
    for each in found:
        per_source[each.source].add(each.code)
    counts = {source: len(per_source[source]) for source in MIN_FOUND}
    assert all(counts[source] >= least for source, least in MIN_FOUND.items()), counts
    for where, least in MIN_DISTINCT.items():
        assert len({each.code for each in found if each.where == where}) >= least, where


def test_every_code_the_source_produces_is_catalogued():
    missing = sorted(
        {f"{f.code} ({f.where}, {f.site})" for f in walk()[0] if error_codes.lookup(f.code) is None}
    )
    assert not missing, "add these to gateway/error_codes.py: " + ", ".join(missing)


def test_every_code_appears_where_the_catalogue_says():
    wrong = sorted(
        f"{f.code}: produced as {f.where} at {f.site}"
        for f in walk()[0]
        if (entry := error_codes.lookup(f.code)) is not None and entry.where != f.where
    )
    assert not wrong


def test_every_catalogued_code_is_produced_somewhere():
    dead = sorted(set(e.code for e in error_codes.CATALOGUE) - set(_found_by_code()))
    assert not dead, f"no source produces these catalogued codes: {dead}"


def test_statuses_are_the_ones_the_raise_sites_answer_with():
    wrong = []
    for code, sites in sorted(_found_by_code().items()):
        entry = error_codes.lookup(code)
        if entry is None or entry.where != "api":
            continue
        known = {site.status for site in sites if site.status is not None}
        every_site_known = all(site.status is not None for site in sites)
        documented = set(entry.statuses)
        if not known <= documented or (every_site_known and known != documented):
            wrong.append(f"{code}: catalogue {sorted(documented)}, source {sorted(known)}")
    assert not wrong, wrong


def test_job_codes_have_no_status_and_api_codes_have_one():
    for entry in error_codes.CATALOGUE:
        assert bool(entry.statuses) == (entry.where == "api"), entry.code
        assert all(100 <= status <= 599 for status in entry.statuses), entry.code


def test_every_computed_code_is_a_known_pass_through():
    computed = {(rel, expr) for rel, expr, _ in walk()[1]}
    unknown = sorted(computed - set(PASS_THROUGHS))
    assert not unknown, f"computed codes this test cannot follow (walk their source): {unknown}"
    stale = sorted(set(PASS_THROUGHS) - computed)
    assert not stale, f"PASS_THROUGHS entries no longer in the source: {stale}"


def test_the_catalogue_is_one_readable_table():
    codes = [entry.code for entry in error_codes.CATALOGUE]
    assert len(codes) == len(set(codes)), "a code is catalogued twice"
    areas = [entry.area for entry in error_codes.CATALOGUE]
    assert set(areas) <= set(error_codes.AREAS)
    order = list(error_codes.AREAS)
    assert areas == sorted(areas, key=order.index), "entries are grouped by area, in AREAS order"
    for entry in error_codes.CATALOGUE:
        assert re.fullmatch(r"[a-z][a-z0-9_]*", entry.code), entry.code
        assert entry.where in ("api", "job"), entry.code
        assert re.match(r"[A-Z`]", entry.meaning) and entry.meaning.endswith("."), entry.code
        assert "\n" not in entry.meaning and "|" not in entry.meaning, entry.code
        assert tuple(sorted(set(entry.statuses))) == entry.statuses, entry.code


def test_lookup():
    entry = error_codes.lookup("four_eyes_violation")
    assert entry is not None and entry.statuses == (403, 409) and entry.where == "api"
    assert error_codes.lookup("no_such_code") is None


def test_the_readme_table_is_the_generated_one():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert readme.count(error_codes.README_START) == 1
    assert readme.count(error_codes.README_END) == 1
    assert error_codes.with_table(readme) == readme, (
        "README.md's error table is stale: python -m gateway.error_codes --write-readme"
    )


def test_write_and_check_the_readme(tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text(
        f"# x\n\nbefore\n\n{error_codes.README_START}\nold\n{error_codes.README_END}\n\nafter\n"
    )
    assert error_codes.main(["--check-readme", "--readme", str(readme)]) == 1
    assert error_codes.main(["--write-readme", "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert text.startswith("# x\n\nbefore\n\n") and text.endswith("\n\nafter\n")
    assert "| `four_eyes_violation` | 403, 409 |" in text and "\nold\n" not in text
    assert error_codes.main(["--check-readme", "--readme", str(readme)]) == 0
    assert error_codes.main([]) == 0
    assert capsys.readouterr().out.strip() == error_codes.markdown_table()


def test_the_catalogue_imports_only_the_standard_library():
    tree = _tree("gateway/error_codes.py")
    imported = {
        (node.module or "" if isinstance(node, ast.ImportFrom) else alias.name).split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    assert imported <= {
        "__future__",
        "argparse",
        "collections",
        "dataclasses",
        "pathlib",
        "sys",
        "typing",
    }


@pytest.mark.parametrize(
    ("build", "logged"),
    [
        (lambda: GatewayError("x", code="no_such_code"), ["no_such_code"]),
        (lambda: NotFound("x", code="file_not_found"), []),
        (lambda: NotFound("x"), []),
    ],
)
def test_an_uncatalogued_code_is_logged_never_raised(build, logged):
    with structlog.testing.capture_logs() as events:
        error = build()
    assert isinstance(error, GatewayError)
    assert [e["code"] for e in events if e["event"] == "error.code_uncatalogued"] == logged
