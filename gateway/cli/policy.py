"""`tunegate policy ...`: the live rules and versions, explain, and policy as code.

Policy as code (one YAML file per tenant, policies.policyfile): `export` writes the live
policy as a file; `plan FILE` shows what applying the file would change (rules added and
removed, and whose access flips) and exits 0 when nothing would, 4 when something would (a
CI check); `apply FILE --expect-version V --reason ...` makes the change one new policy
version, refused (exit 1) when the policy is no longer at version V.

Exit codes: 0 ok (plan: no change), 4 plan: a change, 1 refused or failed (an invalid
policy file included: every error as `FILE:LINE: message`), 2 usage, 3 gateway unreachable.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.markup import escape

from gateway.cli import output
from gateway.cli.app import EXIT_FAILED, app
from gateway.cli.context import JsonFlag, client, emit, wants_json
from gateway.client import ApiError, Client
from policies import plan as planning
from policies import policyfile
from policies.vocabulary import Rule

EXIT_CHANGES = 4
#: access changes shown in a table (all of them with --json)
SHOWN_CHANGES = 200

policy_app = typer.Typer(
    help="Policy: rules, versions, explain; plan, apply and export a policy file.",
    no_args_is_help=True,
)
app.add_typer(policy_app, name="policy")

PolicyFile = Annotated[
    Path,
    typer.Argument(
        metavar="FILE", help="the tenant's policy file (YAML)", dir_okay=False, exists=True
    ),
]


# --------------------------------------------------------------------------- reading


@policy_app.command("show")
def show(
    ctx: typer.Context,
    ptype: Annotated[str | None, typer.Option(help="p, g or g2")] = None,
    sub: Annotated[str | None, typer.Option(help="p.sub or g.member")] = None,
    obj: Annotated[str | None, typer.Option(help="p.obj")] = None,
    act: Annotated[str | None, typer.Option(help="p.act")] = None,
    tenant: Annotated[
        str | None, typer.Option(help="your tenant (default) or * (baseline)")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, help="at most this many rules")] = 1000,
    json_flag: JsonFlag = False,
) -> None:
    """The live rules, filtered by exact field values."""
    params = {"ptype": ptype, "sub": sub, "obj": obj, "act": act, "tenant": tenant}
    rules: list[dict[str, Any]] = []
    for rule in client(ctx).pages("/v1/policies/rules", params=params, limit=min(limit, 1000)):
        rules.append(rule)
        if len(rules) >= limit:
            break
    page = {"object": "list", "data": rules}

    def human(data: dict[str, Any]) -> None:
        rows = [{"id": r["id"], "ptype": r["ptype"], "rule": ", ".join(r["values"])} for r in rules]
        output.table(rows, [("id", "id"), ("ptype", "ptype"), ("rule", "rule")])

    emit(ctx, page, json_flag=json_flag, human=human)


@policy_app.command("versions")
def versions(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 20,
    before: Annotated[int | None, typer.Option(help="cursor from the page before")] = None,
    json_flag: JsonFlag = False,
) -> None:
    """Policy versions, newest first."""
    page = client(ctx).get("/v1/policies/versions", params={"limit": limit, "before": before})

    def human(data: dict[str, Any]) -> None:
        rows = [{**v, "hash": v["hash"][:12]} for v in data.get("data", [])]
        columns = [("id", "id"), ("created_at", "created"), ("actor", "actor")]
        columns += [("rule_count", "rules"), ("hash", "hash"), ("reason", "reason")]
        output.table(rows, columns)
        if data.get("next_before"):
            output.stderr.print(f"more: --before {data['next_before']}")

    emit(ctx, page, json_flag=json_flag, human=human)


@policy_app.command("diff")
def diff(
    ctx: typer.Context,
    from_version: Annotated[int, typer.Argument(metavar="V1", min=0)],
    to_version: Annotated[int, typer.Argument(metavar="V2", min=0)],
    json_flag: JsonFlag = False,
) -> None:
    """The rules added and removed from version V1 to V2 (those of your tenant and the
    baseline)."""
    found = client(ctx).get("/v1/policies/diff", params={"from": from_version, "to": to_version})

    def human(data: dict[str, Any]) -> None:
        _print_rule_lines(data["added"], data["removed"])
        output.stdout.print(
            f"version {from_version} -> {to_version}: "
            f"{len(data['added'])} added, {len(data['removed'])} removed"
        )

    emit(ctx, found, json_flag=json_flag, human=human)


def _print_rule_lines(
    added: Sequence[str], removed: Sequence[str], where: dict[str, str] | None = None
) -> None:
    for line in added:
        at = f"  [dim]{escape(where[line])}[/]" if where and line in where else ""
        output.stdout.print(f"[green]+ {escape(line)}[/]{at}")
    for line in removed:
        output.stdout.print(f"[red]- {escape(line)}[/]")


@policy_app.command("explain")
def explain(
    ctx: typer.Context,
    subject: Annotated[str, typer.Argument(help="user:<sub> or role:<name>")],
    domain: Annotated[str, typer.Argument(help="the tenant (yours)")],
    obj: Annotated[str, typer.Argument(metavar="OBJECT", help="e.g. ds:<id>, model:*, policy")],
    action: Annotated[str, typer.Argument(help="e.g. train, read")],
    role: Annotated[
        list[str] | None, typer.Option("--role", help="a token role to assume (repeatable)")
    ] = None,
    purpose: Annotated[
        str | None, typer.Option(help="also check a data source's allowed purposes")
    ] = None,
    json_flag: JsonFlag = False,
) -> None:
    """Why SUBJECT may or may not do ACTION on OBJECT: the decision, the policy version,
    every matching rule (deny overrides allow) and the role chain that reached it."""
    api = client(ctx)
    body = {"sub": subject, "tenant": domain, "obj": obj, "act": action, "roles": role or []}
    found = api.post("/v1/policies/explain", json=body)
    gate = _purpose_gate(api, obj, purpose) if purpose is not None else None
    if wants_json(ctx, json_flag):
        output.print_json(found if gate is None else {**found, "purpose_gate": gate})
        return
    _print_explanation(found)
    if gate is not None:
        _print_purpose_gate(gate)


def _purpose_gate(api: Client, obj: str, purpose: str) -> dict[str, Any]:
    """A data source's allowed purposes decide purposes (the policy has none): read them."""
    if not obj.startswith("ds:") or obj == "ds:*":
        return {"purpose": purpose, "applies": False, "reason": "only a data source has purposes"}
    try:
        source = api.get(f"/v1/data_sources/{obj[3:]}")
    except ApiError as exc:
        return {"purpose": purpose, "applies": True, "allowed": None, "reason": exc.code}
    allowed = list(source.get("allowed_purposes") or [])
    return {
        "purpose": purpose,
        "applies": True,
        "allowed": purpose in allowed and source.get("status") == "approved",
        "allowed_purposes": allowed,
        "status": source.get("status"),
    }


def _chain(links: Sequence[dict[str, str]]) -> str:
    if not links:
        return "directly"
    steps = [links[0]["source"]]
    for link in links:
        via = "token" if link["via"] == "token" else link["via"].split(",", 1)[0]
        steps.append(f"-({via})-> {link['target']}")
    return " ".join(steps)


def _print_explanation(found: dict[str, Any]) -> None:
    decision = found["decision"]
    colour = "green" if decision == "allow" else "red"
    output.stdout.print(
        f"[bold {colour}]{decision}[/] under policy version {found['policy_version'][:12]}"
    )
    if found.get("error"):
        output.stdout.print(f"error: {escape(found['error'])} ({escape(str(found['detail']))})")
    if found.get("rule"):
        output.stdout.print(f"decided by: {escape(', '.join(found['rule']))}")
        output.stdout.print(f"role chain: {escape(_chain(found['role_chain']))}")
    else:
        output.stdout.print("no rule matched: deny by default")
    if found.get("deny_override"):
        output.stdout.print("[red]deny overrides the allow rules that also match[/]")
    rows = [
        {
            "deciding": "*" if m["deciding"] else "",
            "effect": m["effect"],
            "rule": ", ".join(m["rule"]),
            "subject": _chain(m["role_chain"]),
            "object": m["object_match"]
            + (f" {_chain(m['object_chain'])}" if m["object_chain"] else ""),
        }
        for m in found.get("matched", [])
    ]
    if rows:
        columns = [("deciding", ""), ("effect", "effect"), ("rule", "rule")]
        columns += [("subject", "subject via"), ("object", "object via")]
        output.table(rows, columns, title="matching rules")


def _print_purpose_gate(gate: dict[str, Any]) -> None:
    if not gate["applies"]:
        output.stdout.print(f"purpose: {escape(gate['reason'])}")
    elif gate.get("allowed") is None:
        output.stdout.print(f"purpose: cannot read the data source ({escape(gate['reason'])})")
    else:
        verdict = "allowed" if gate["allowed"] else "not allowed"
        output.stdout.print(
            f"purpose {escape(gate['purpose'])}: {verdict} (data source {gate['status']}, "
            f"allowed purposes: {escape(', '.join(gate['allowed_purposes']) or 'none')})"
        )


# --------------------------------------------------------------------------- policy as code


def _load(path: Path) -> policyfile.PolicyDocument:
    """The policy file, or every error in it (exit 1)."""
    try:
        return policyfile.load(path)
    except policyfile.PolicyFileInvalid as exc:
        for error in exc.errors:
            output.stderr.print(escape(str(error)))
        if exc.more:
            output.stderr.print(f"... and {exc.more} more errors")
        output.stderr.print(f"{escape(str(path))}: {len(exc.errors) + exc.more} errors")
        raise typer.Exit(EXIT_FAILED) from None
    except OSError as exc:
        output.stderr.print(f"{escape(str(path))}: cannot read ({escape(exc.strerror or '')})")
        raise typer.Exit(EXIT_FAILED) from None


def _live_and_diff(
    api: Client, path: Path
) -> tuple[policyfile.PolicyDocument, dict[str, Any], planning.RuleDiff]:
    """The policy file, the live policy (one export call, made while the file is read) and
    the change from the live policy to the file."""
    pool = ThreadPoolExecutor(max_workers=1)
    export = pool.submit(api.get, "/v1/policies/export", timeout=120.0)
    try:
        doc = _load(path)
        live = export.result()
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    if live["tenant"] != doc.tenant:
        output.stderr.print(
            f"{escape(doc.file)}: the file is tenant {escape(doc.tenant)!r}, your token's "
            f"tenant is {escape(live['tenant'])!r}"
        )
        raise typer.Exit(EXIT_FAILED)
    return doc, live, planning.diff(live["rules"], doc.lines)


def _version_id(live: dict[str, Any]) -> int:
    return live["version"]["id"] if live.get("version") else 0


_PARAM = re.compile(r"(add|remove)\.(\d+)")


def _refused_at(
    exc: ApiError, doc: policyfile.PolicyDocument, sent: dict[str, list[str]]
) -> NoReturn:
    """A refusal of one rule of the change, shown at the file line that states it."""
    match = _PARAM.fullmatch(exc.param or "")
    if match is None:
        raise exc
    rule = sent[match.group(1)][int(match.group(2))]
    line = doc.line_of(rule)
    where = f"{doc.file}:{line}" if line is not None else doc.file
    output.stderr.print(
        f"{escape(where)}: {escape(exc.code)} ({exc.status}): {escape(exc.message)}"
    )
    raise typer.Exit(EXIT_FAILED)


@policy_app.command("plan")
def plan(ctx: typer.Context, path: PolicyFile, json_flag: JsonFlag = False) -> None:
    """What applying FILE would change: rules added and removed against the live policy
    version, and the subjects whose access flips. Exit 0: no change; 4: a change."""
    api = client(ctx)
    doc, live, change = _live_and_diff(api, path)
    if not change:
        result = _no_change(live)
    else:
        sent = {"add": [r.line for r in change.added], "remove": [r.line for r in change.removed]}
        try:
            result = api.post(
                "/v1/policies/plan", json={"base_version": _version_id(live), **sent}, timeout=120.0
            )
        except ApiError as exc:
            _refused_at(exc, doc, sent)
    if wants_json(ctx, json_flag):
        output.print_json(result)
    else:
        _print_plan(result, doc, path)
    if change:
        raise typer.Exit(EXIT_CHANGES)


def _no_change(live: dict[str, Any]) -> dict[str, Any]:
    """The plan API's answer for an empty change (which it is not asked for)."""
    version = live.get("version")
    return {
        "object": "policy.plan",
        "tenant": live["tenant"],
        "base_version": version,
        "new_policy_version": version["hash"] if version else None,
        "added": [],
        "removed": [],
        "access_changes": [],
        "checked": 0,
        "complete": True,
    }


def _print_plan(result: dict[str, Any], doc: policyfile.PolicyDocument, path: Path) -> None:
    base = result.get("base_version") or {"id": 0, "hash": ""}
    against = f"policy version {base['id']} ({base['hash'][:12]})"
    if not result["added"] and not result["removed"]:
        output.stdout.print(f"No changes: {escape(str(path))} matches {against}.")
        return
    output.stdout.print(f"Plan for tenant {escape(result['tenant'])} against {against}:")
    where = {line: f"{path}:{doc.line_of(line)}" for line in result["added"]}
    _print_rule_lines(result["added"], result["removed"], where)
    output.stdout.print(
        f"{len(result['added'])} to add, {len(result['removed'])} to remove; the policy would "
        f"become {result['new_policy_version'][:12]}."
    )
    changes = result["access_changes"]
    rows = [
        {
            **c,
            "obj": c["obj"] + (f" (+{c['alike']} alike)" if c.get("alike") else ""),
            "change": f"{c['before']} -> {c['after']}",
            "rule": ", ".join(c["rule_after"] or []),
        }
        for c in changes[:SHOWN_CHANGES]
    ]
    columns = [("sub", "subject"), ("obj", "object"), ("act", "action"), ("change", "access")]
    columns.append(("rule", "deciding rule after"))
    title = f"access changes: {len(changes)} of {result['checked']} requests checked flip"
    if changes:
        output.table(rows, columns, title=title)
    else:
        output.stdout.print(f"No access changes ({result['checked']} requests checked).")
    if len(changes) > SHOWN_CHANGES:
        output.stdout.print(f"... and {len(changes) - SHOWN_CHANGES} more (--json lists all)")
    if not result["complete"]:
        output.stdout.print("[yellow]the change touches more requests than were checked[/]")
    output.stdout.print(
        f"Apply with: tunegate policy apply {escape(str(path))} --expect-version {base['id']} "
        '--reason "..."'
    )


@policy_app.command("apply")
def apply(
    ctx: typer.Context,
    path: PolicyFile,
    expect_version: Annotated[
        int, typer.Option("--expect-version", min=0, help="the version the plan was made on")
    ],
    reason: Annotated[str, typer.Option("--reason", help="why (kept with the version)")],
    json_flag: JsonFlag = False,
) -> None:
    """Make the live policy what FILE says, as one new policy version, unless the policy
    has moved on from version V (then nothing changes: plan again)."""
    api = client(ctx)
    doc, live, change = _live_and_diff(api, path)
    if _version_id(live) != expect_version:
        version = live.get("version") or {"id": 0, "hash": ""}
        output.print_error(
            code="policy_version_conflict",
            status=409,
            message=f"the policy is at version {version['id']} ({version['hash'][:12]}), not at "
            f"version {expect_version} as expected: plan again",
        )
        raise typer.Exit(EXIT_FAILED)
    if not change:
        output.stderr.print(
            f"Nothing to apply: {escape(str(path))} matches version {expect_version}."
        )
        return
    sent = {"add": [r.line for r in change.added], "remove": [r.line for r in change.removed]}
    body = {"expect_version": expect_version, "reason": reason, **sent}
    try:
        version = api.post("/v1/policies/apply", json=body, timeout=120.0)
    except ApiError as exc:
        _refused_at(exc, doc, sent)

    def human(data: dict[str, Any]) -> None:
        _print_rule_lines(sent["add"], sent["remove"])
        output.stdout.print(
            f"Applied as policy version {data['id']} ({data['hash'][:12]}): "
            f"{len(sent['add'])} added, {len(sent['remove'])} removed."
        )

    emit(ctx, version, json_flag=json_flag, human=human)


@policy_app.command("export")
def export(
    ctx: typer.Context,
    out: Annotated[Path | None, typer.Option("-o", "--output", help="file to write")] = None,
    json_flag: JsonFlag = False,
) -> None:
    """The live policy of your tenant as a policy file (stdout, or -o FILE)."""
    live = client(ctx).get("/v1/policies/export", timeout=120.0)
    if wants_json(ctx, json_flag):
        output.print_json(live)
        return
    version = live.get("version") or {"id": 0, "hash": "none"}
    header = [
        f"tunegate policy for tenant {live['tenant']}, exported at policy version "
        f"{version['id']} (sha256 {version['hash']}).",
        "The baseline that holds in every tenant comes from the seed and is not listed here.",
    ]
    rules = [Rule(line.split(",")[0], line.split(",")[1:]) for line in live["rules"]]
    text = policyfile.render(live["tenant"], rules, header=header)
    if out is None:
        output.stdout.file.write(text)
        return
    out.write_text(text, encoding="utf-8")
    output.stderr.print(f"wrote {escape(str(out))} ({len(rules)} rules, version {version['id']})")
