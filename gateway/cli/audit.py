"""`tunegate audit ...`: the trail checked offline, and searched, exported and verified."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import IO, Annotated, Any

import typer
from rich.markup import escape

from gateway.cli import output, progress
from gateway.cli.app import app
from gateway.cli.context import JsonFlag, client, emit, wants_json
from gateway.client import Client, GatewayUnreachable

EXPORT_PROOF_FORMAT = "tunegate-export-proof/v1"  # audit.export_proof, not imported here

audit_app = typer.Typer(help="Audit trail: search, export, verify.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")


@audit_app.command("verify-proof")
def verify_proof(
    proof: Annotated[
        Path,
        typer.Argument(
            help="JSON from GET /v1/audit/events/{seq}/proof, or a c2sp.org/tlog-proof "
            "(the same with ?format=tlog-proof)"
        ),
    ],
    checkpoint: Annotated[
        Path | None,
        typer.Argument(
            help="JSON proof: the JSON of GET /v1/audit/checkpoints/latest. tlog-proof: the "
            "key file (vkey, PEM or the JSON of GET /v1/audit/public-key)"
        ),
    ] = None,
    public_key: Annotated[
        Path | None, typer.Argument(help="JSON proof: PEM from GET /v1/audit/public-key")
    ] = None,
    key: Annotated[
        list[str] | None,
        typer.Option("--key", help="trusted signed-note verifier key (vkey) or key file"),
    ] = None,
    origin: Annotated[
        str | None, typer.Option(help="tlog-proof: the checkpoint origin to insist on")
    ] = None,
) -> None:
    """Check an inclusion proof offline against a signed checkpoint and the public key.
    Reads the JSON proof (with its checkpoint and PEM) and C2SP tlog-proof bundles (with a
    vkey, a PEM or the public-key JSON)."""
    from audit.offline import is_tlog_proof, verify_tlog_proof
    from audit.offline import verify_proof as check_json

    data = proof.read_bytes()
    if is_tlog_proof(data):
        keys = _trusted_keys([*(key or []), *([str(checkpoint)] if checkpoint else [])])
        verdict = verify_tlog_proof(data, keys, origin=origin)
    else:
        if checkpoint is None or public_key is None:
            raise typer.BadParameter("a JSON proof needs CHECKPOINT and PUBLIC_KEY")
        verdict = check_json(data, checkpoint.read_bytes(), public_key.read_bytes())
    typer.echo(json.dumps({"ok": verdict.ok, "code": verdict.code, "message": verdict.message}))
    if not verdict.ok:
        raise typer.Exit(1)


def _trusted_keys(items: list[str]) -> Any:
    """Keys from ``--key`` values: each a vkey string or a file holding a vkey, a PEM or
    the public-key JSON."""
    from audit.note import NoteError
    from audit.offline import TrustedKeys

    if not items:
        raise typer.BadParameter("give the gateway's key: --key VKEY (or a key file)")
    loaded: list[str | bytes] = []
    for item in items:
        try:
            is_file = Path(item).is_file()
        except OSError:  # a vkey is no path
            is_file = False
        loaded.append(Path(item).read_bytes() if is_file else item)
    try:
        return TrustedKeys.load(*loaded)
    except (NoteError, ValueError) as exc:
        raise typer.BadParameter(f"--key: {exc}") from None


@audit_app.command("verify-consistency")
def verify_consistency(
    ctx: typer.Context,
    old: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, help="the older checkpoint you kept")
    ],
    new: Annotated[
        Path | None,
        typer.Argument(
            help="the newer checkpoint (default: fetch GET /v1/audit/checkpoint; with --save "
            "it is kept for next time)"
        ),
    ] = None,
    key: Annotated[
        list[str] | None,
        typer.Option("--key", help="trusted signed-note verifier key (vkey) or key file"),
    ] = None,
    proof: Annotated[
        Path | None,
        typer.Option(
            help="the proof (JSON of GET /v1/audit/consistency, or base64 lines); default: "
            "fetch it from the gateway"
        ),
    ] = None,
    origin: Annotated[str | None, typer.Option(help="the origin both must name")] = None,
    save: Annotated[
        Path | None, typer.Option(help="write the fetched newer checkpoint here once it checks")
    ] = None,
    json_flag: JsonFlag = False,
) -> None:
    """Check that a newer checkpoint extends an older one you kept (RFC 6962 consistency):
    the log was not rewritten in between. Both are C2SP signed notes (or the JSON of
    /v1/audit/checkpoints/latest); only the proof and a missing NEW come from the gateway."""
    from audit.note import NoteError, TlogCheckpoint, parse_note
    from audit.offline import verify_checkpoint_consistency

    keys = _trusted_keys(list(key or []))
    old_data = old.read_bytes()
    new_data = new.read_bytes() if new is not None else None
    if new_data is None:
        new_data = str(client(ctx).get("/v1/audit/checkpoint")).encode()
    proof_data: bytes | None = proof.read_bytes() if proof is not None else None
    if proof_data is None:
        try:
            sizes = [_size_of(data, parse_note, TlogCheckpoint) for data in (old_data, new_data)]
        except (NoteError, ValueError) as exc:
            raise typer.BadParameter(f"cannot read a checkpoint: {exc}") from None
        fetched = client(ctx).get(
            "/v1/audit/consistency", params={"first": sizes[0], "second": sizes[1]}
        )
        proof_data = json.dumps(fetched).encode()
    verdict = verify_checkpoint_consistency(old_data, new_data, proof_data, keys, origin=origin)
    if verdict.ok and save is not None and new is None:
        save.write_bytes(new_data)
    if wants_json(ctx, json_flag):
        output.print_json(verdict.to_dict())
    elif verdict.ok:
        output.stdout.print(f"[bold green]ok[/]: {escape(verdict.message)}")
    else:
        output.stdout.print(
            f"[bold red]inconsistent[/]: {escape(verdict.code)}: {escape(verdict.message)}"
        )
    if not verdict.ok:
        raise typer.Exit(1)


def _size_of(data: bytes, parse_note: Any, checkpoint_type: Any) -> int:
    """The tree size a checkpoint claims (unverified: only to ask for the right proof)."""
    text = data.decode("utf-8")
    if text.lstrip().startswith("{"):
        doc = json.loads(text)
        if isinstance(doc.get("signed_note"), str):
            text = doc["signed_note"]
        else:
            return int(doc["tree_size"])
    body, _ = parse_note(text)
    return int(checkpoint_type.parse(body).size)


# --- client commands ---------------------------------------------------------------------

EVENT_COLUMNS = [
    ("seq", "seq"),
    ("ts", "ts"),
    ("actor", "actor"),
    ("action", "action"),
    ("resource", "resource"),
    ("decision", "decision"),
    ("policy_version", "policy version"),
]
Filter = Annotated[str | None, typer.Option()]
Since = Annotated[
    str | None, typer.Option(help="RFC 3339 time, inclusive (e.g. 2026-11-28T12:00:00Z)")
]
Until = Annotated[str | None, typer.Option(help="RFC 3339 time, exclusive")]


def _filters(actor, action, resource, decision, since, until) -> dict[str, Any]:
    return {
        "actor": actor,
        "action": action,
        "resource": resource,
        "decision": decision,
        "since": since,
        "until": until,
    }


@audit_app.command("search")
def search(
    ctx: typer.Context,
    actor: Filter = None,
    action: Filter = None,
    resource: Filter = None,
    decision: Annotated[str | None, typer.Option(help="allow, deny or error")] = None,
    since: Since = None,
    until: Until = None,
    after: Annotated[int, typer.Option(min=0, help="cursor: events after this seq")] = 0,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="events per page")] = 100,
    all_pages: Annotated[bool, typer.Option("--all", help="every page, not just one")] = False,
    json_flag: JsonFlag = False,
) -> None:
    """Your tenant's audit events, oldest first, filtered and paged (the read is audited)."""
    api = client(ctx)
    params = {**_filters(actor, action, resource, decision, since, until), "limit": limit}
    as_json = wants_json(ctx, json_flag)
    if not all_pages:
        page = api.get("/v1/audit/events", params={**params, "after": after})
        emit(ctx, page, json_flag=json_flag, human=_show_page)
        return
    cursor: int | None = after
    while cursor is not None:
        page = api.get("/v1/audit/events", params={**params, "after": cursor})
        if as_json:
            for event in page["data"]:
                sys.stdout.write(json.dumps(event, ensure_ascii=False) + "\n")
        elif page["data"]:
            output.table(page["data"], EVENT_COLUMNS)
        cursor = page.get("next_after")


def _show_page(page: dict[str, Any]) -> None:
    output.table(page.get("data", []), EVENT_COLUMNS)
    if page.get("next_after") is not None:
        output.stderr.print(f"more: --after {page['next_after']}")


@audit_app.command("export")
def export(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option("-o", "--output", help="the JSON Lines file to write")],
    since: Since = None,
    until: Until = None,
    actor: Filter = None,
    action: Filter = None,
    resource: Filter = None,
    decision: Annotated[str | None, typer.Option(help="allow, deny or error")] = None,
    after: Annotated[int, typer.Option(min=0, help="only events after this seq")] = 0,
    json_flag: JsonFlag = False,
) -> None:
    """Write your tenant's events as JSON Lines, ending with the proof that
    `tunegate audit verify-export` checks offline. The file appears only once complete."""
    params = {**_filters(actor, action, resource, decision, since, until), "after": after}
    written = _download_export(client(ctx), params | {"proof": "true"}, out)
    if wants_json(ctx, json_flag):
        output.print_json(written)
        return
    output.stdout.print(
        f"exported {written['events']:,} events (seq {written['first_seq']}..{written['last_seq']})"
        f" to {escape(str(out))}, proven under the signed checkpoint of "
        f"{written['tree_size']:,} events"
    )


def _download_export(api: Client, params: dict[str, Any], out: Path) -> dict[str, Any]:
    """Streams the export into a temporary file beside ``out`` and renames it into place
    once the trailer has arrived."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent)
    try:
        with os.fdopen(fd, "w+b") as handle:
            _stream_into(api, params, handle)
            handle.flush()
            os.fsync(handle.fileno())
            tail = _last_line(handle)
        trailer = json.loads(tail) if tail.startswith(b'{"format"') else None
        if not trailer or trailer.get("format") != EXPORT_PROOF_FORMAT:
            raise GatewayUnreachable(api.base_url, "the export ended before its proof")
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    keys = ("events", "first_seq", "last_seq", "tree_size")
    return {"file": str(out), **{key: trailer.get(key) for key in keys}}


def _last_line(handle: IO[bytes]) -> bytes:
    """The file's last line (the proof trailer, however long), read from its end."""
    end = handle.seek(0, os.SEEK_END)
    tail, position = b"", end
    while position > 0:
        step = min(EXPORT_CHUNK, position)
        position -= step
        handle.seek(position)
        tail = handle.read(step) + tail
        cut = tail.rstrip(b"\n").rfind(b"\n")
        if cut >= 0:
            return tail[cut + 1 :].rstrip(b"\n")
    return tail.rstrip(b"\n")


def _stream_into(api: Client, params: dict[str, Any], handle: IO[bytes]) -> None:
    """Writes the body to ``handle`` as it arrives (the bytes as sent: the export is not
    compressed). Progress runs over the seq range (events come in seq order), so it needs
    no count up front; it is read off the stream about once a MiB."""
    start = int(params.get("after") or 0)
    with api.stream("GET", "/v1/audit/export", params=params) as response:
        tree_size = int(response.headers.get("x-audit-tree-size") or 0)
        with progress.counted() as bar:
            task = bar.add_task("exporting", total=max(tree_size - start, 1))
            previous, unseen = b"", 0
            for chunk in response.iter_raw():
                handle.write(chunk)
                unseen += len(chunk)
                if unseen >= PROGRESS_EVERY:
                    recent = chunk if len(chunk) >= MAX_LINE else previous[-MAX_LINE:] + chunk
                    seq = _last_seq(recent[-MAX_LINE:])
                    if seq is not None:
                        bar.update(task, completed=seq - start)
                    unseen = 0
                previous = chunk


def _last_seq(data: bytes) -> int | None:
    """The seq of the last complete event line in ``data``."""
    end = data.rfind(b"\n")
    line = data[data.rfind(b"\n", 0, end) + 1 : end] if end > 0 else b""
    mark = line.rfind(b',"seq":')
    if mark < 0:
        return None
    digits = line[mark + 7 : line.find(b",", mark + 7)]
    return int(digits) if digits.isdigit() else None


EXPORT_CHUNK = 1 << 20
PROGRESS_EVERY = 1 << 20
MAX_LINE = 64 * 1024  # an event line is at most a few KiB


@audit_app.command("verify")
def verify(ctx: typer.Context, json_flag: JsonFlag = False) -> None:
    """Verify the whole chain on the gateway (hashes, links, checkpoints, signatures),
    with progress; names the first bad seq."""
    api = client(ctx)
    result: dict[str, Any] | None = None
    with progress.counted() as bar, api.events("/v1/audit/verify/stream") as events:
        task = bar.add_task("verifying", total=None)
        for event in events:
            data = event.json()
            if event.event == "progress":
                bar.update(task, completed=data["checked"], total=max(data["total"], 1))
            elif event.event == "error":
                error = data.get("error") or {}
                output.print_error(code=str(error.get("code")), message=str(error.get("message")))
                raise typer.Exit(1)
            else:
                result = data
                break
    if result is None:
        raise GatewayUnreachable(api.base_url, "the verification stream ended without a result")
    emit(ctx, result, json_flag=json_flag, human=_show_verification)
    if not result.get("ok"):
        raise typer.Exit(1)


def _show_verification(result: dict[str, Any]) -> None:
    if result.get("ok"):
        output.stdout.print(
            f"[bold green]ok[/]: {result['length']:,} events, "
            f"{result.get('checkpoints_checked', 0):,} checkpoints checked, head "
            f"{result.get('head')}"
            + (f" ({result['pending']} pending)" if result.get("pending") else "")
        )
        return
    reason = result.get("reason") or {}
    output.stdout.print(
        f"[bold red]broken[/] at seq {result.get('first_bad_seq')}: "
        f"{escape(str(reason.get('code')))}: {escape(str(reason.get('message')))}"
    )


@audit_app.command("verify-export")
def verify_export(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="from `audit export`")],
    public_key: Annotated[
        Path,
        typer.Option(
            "--public-key",
            exists=True,
            dir_okay=False,
            help="PEM (or the JSON of GET /v1/audit/public-key)",
        ),
    ],
    json_flag: JsonFlag = False,
) -> None:
    """Check an export offline: it re-hashes to the chain, its events are included under
    the signed checkpoint, and the signature holds. Names the first bad seq."""
    from audit.export_proof import verify_export as check

    pem = _public_key_pem(public_key.read_bytes())
    size = file.stat().st_size
    with progress.transfer() as bar, file.open("rb") as handle:
        task = bar.add_task("checking", total=size)

        def lines():
            for line in handle:
                bar.advance(task, len(line))
                yield line

        verdict = check(lines(), pem)
    if wants_json(ctx, json_flag):
        output.print_json(verdict.to_dict())
    elif verdict.ok:
        output.stdout.print(f"[bold green]ok[/]: {escape(verdict.message)}")
    else:
        where = f" at seq {verdict.first_bad_seq}" if verdict.first_bad_seq is not None else ""
        output.stdout.print(
            f"[bold red]failed[/]{where}: {escape(verdict.code)}: {escape(verdict.message)}"
        )
    if not verdict.ok:
        raise typer.Exit(1)


def _public_key_pem(data: bytes) -> bytes:
    text = data.strip()
    if text.startswith(b"{"):
        try:
            return str(json.loads(text)["public_key_pem"]).encode()
        except (ValueError, KeyError, TypeError):
            raise typer.BadParameter("not a PEM nor a public-key document") from None
    return text
