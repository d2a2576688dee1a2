"""`tunegate files ...`: upload training files into a data source and read them back."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from gateway.cli import output, progress
from gateway.cli.app import EXIT_FAILED, app
from gateway.cli.context import JsonFlag, client, emit, wants_json

files_app = typer.Typer(
    help="Training files: upload, list, show, download, delete.", no_args_is_help=True
)
app.add_typer(files_app, name="files")

FILE_COLUMNS = [
    ("id", "id"),
    ("filename", "filename"),
    ("status", "status"),
    ("examples", "examples"),
    ("bytes", "bytes"),
    ("data_source", "data source"),
    ("created_at", "created"),
]


@files_app.command("upload")
def upload(
    ctx: typer.Context,
    path: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)],
    data_source: Annotated[str, typer.Option("--data-source", help="data source id (ds-...)")],
    purpose: Annotated[str, typer.Option(help="OpenAI file purpose")] = "fine-tune",
    json_flag: JsonFlag = False,
) -> None:
    """Upload PATH (JSONL) into DATA_SOURCE; prints its datasheet, or its faults."""
    api = client(ctx)
    size = path.stat().st_size
    with progress.transfer() as bar:
        task = bar.add_task(f"uploading {escape(path.name)}", total=size)

        def sent(done: int) -> None:
            bar.update(task, completed=done)
            if done >= size:
                bar.update(task, description="scanning on the gateway")

        uploaded = api.upload(
            "/v1/files",
            path,
            fields={"purpose": purpose, "data_source": data_source},
            on_progress=sent,
        )
    emit(ctx, uploaded, json_flag=json_flag, human=show_uploaded)
    if uploaded.get("status") == "error":
        raise typer.Exit(EXIT_FAILED)


def show_uploaded(file: dict[str, Any]) -> None:
    output.fields(file, ["id", "filename", "status", "data_source", "bytes", "sha256"])
    report = file.get("report") or {}
    if file.get("status") == "error":
        output.stderr.print(
            f"[bold red]refused[/]: {escape(str(file.get('status_details') or 'see the faults'))}"
        )
    show_datasheet(report)


def show_datasheet(report: dict[str, Any]) -> None:
    """The datasheet's summary: examples, tokens, PII by type, faults with line numbers."""
    tokens = report.get("tokens") or {}
    output.stdout.print(
        f"[bold]examples[/]: {report.get('examples', '-')}  "
        f"[bold]lines[/]: {report.get('lines', '-')}  [bold]format[/]: "
        f"{escape(str(report.get('format', '-')))}"
    )
    if tokens:
        output.stdout.print(
            f"[bold]tokens[/]: {tokens.get('total')} total, mean {tokens.get('mean')}, "
            f"p95 {tokens.get('p95')}, max {tokens.get('max')} "
            f"({escape(str(report.get('tokenizer', '')))})"
        )
    for label, key in (
        ("exact duplicates", "exact_duplicates"),
        ("near duplicates", "near_duplicates"),
    ):
        count = (report.get(key) or {}).get("count")
        if count:
            output.stdout.print(f"[bold]{label}[/]: {count}")
    pii = report.get("pii") or {}
    by_type = pii.get("by_type") or {}
    if by_type:
        output.table(
            (
                {"type": kind, "findings": found.get("findings"), "lines": _lines(found)}
                for kind, found in sorted(by_type.items())
            ),
            [("type", "PII type"), ("findings", "findings"), ("lines", "lines")],
            title=f"personal data (action: {pii.get('action')})",
        )
    faults = report.get("faults") or {}
    if faults.get("count"):
        shown = faults.get("shown") or []
        output.table(
            shown,
            [("line", "line"), ("code", "code"), ("message", "message")],
            title=f"faults: {faults['count']} ({len(shown)} shown)",
        )


def _lines(found: dict[str, Any]) -> str:
    numbers = found.get("line_numbers") or []
    text = ", ".join(str(n) for n in numbers[:12])
    return text + (", ..." if len(numbers) > 12 else "")


@files_app.command("list")
def list_files(
    ctx: typer.Context,
    data_source: Annotated[str | None, typer.Option("--data-source")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 100,
    after: Annotated[
        str | None, typer.Option(help="cursor: the last id of the page before")
    ] = None,
    json_flag: JsonFlag = False,
) -> None:
    """Files you may read, newest first."""
    page = client(ctx).get(
        "/v1/files", params={"data_source": data_source, "limit": limit, "after": after}
    )
    emit(ctx, page, json_flag=json_flag, human=lambda p: _page(p, FILE_COLUMNS, "files"))


def _page(page: dict[str, Any], columns: list[tuple[str, str]], what: str) -> None:
    output.table(page.get("data", []), columns)
    if page.get("has_more"):
        cursor = page.get("next_after") or page.get("last_id")
        output.stderr.print(f"more {what}: --after {escape(str(cursor))}")


@files_app.command("get")
def get_file(ctx: typer.Context, file_id: str, json_flag: JsonFlag = False) -> None:
    """One file with its datasheet."""
    file = client(ctx).get(f"/v1/files/{file_id}")
    emit(ctx, file, json_flag=json_flag, human=show_uploaded)


@files_app.command("delete")
def delete_file(ctx: typer.Context, file_id: str, json_flag: JsonFlag = False) -> None:
    """Delete a file's content (not erasure: its hashes, datasheet and lineage stay, so the
    models trained on it stay explainable). Refused while a queued or running job uses it."""
    deleted = client(ctx).delete(f"/v1/files/{file_id}")
    emit(
        ctx,
        deleted,
        json_flag=json_flag,
        human=lambda d: output.stdout.print(f"deleted {escape(str(d.get('id')))}"),
    )


@files_app.command("content")
def file_content(
    ctx: typer.Context,
    file_id: str,
    out: Annotated[
        Path | None, typer.Option("-o", "--output", help="write here instead of stdout")
    ] = None,
) -> None:
    """The file's stored content (audited)."""
    api = client(ctx)
    with api.stream("GET", f"/v1/files/{file_id}/content") as response:
        if out is None:
            for chunk in response.iter_bytes():
                sys.stdout.buffer.write(chunk)
            sys.stdout.buffer.flush()
            return
        total = int(response.headers.get("content-length") or 0) or None
        with progress.transfer() as bar, out.open("wb") as handle:
            task = bar.add_task(f"downloading {escape(file_id)}", total=total)
            for chunk in response.iter_bytes():
                handle.write(chunk)
                bar.advance(task, len(chunk))
    if not wants_json(ctx, False):
        output.stderr.print(f"wrote {escape(str(out))}")
