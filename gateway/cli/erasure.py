"""`tunegate erasure ...`: data-subject erasure requests (GDPR Art. 17)."""

from __future__ import annotations

import sys
import time
from typing import Annotated, Any

import typer

from gateway.cli import output, progress
from gateway.cli.app import app
from gateway.cli.context import JsonFlag, client, emit

erasure_app = typer.Typer(help="Erasure requests: request, status, decide.", no_args_is_help=True)
app.add_typer(erasure_app, name="erasure")

POLL_SECONDS = 0.5
SHOWN = [
    "id",
    "status",
    "reference",
    "subject_sha256",
    "requested_by",
    "requested_at",
    "decision",
    "decision_reason",
    "decided_by",
    "decided_at",
    "salt_destroyed",
]


def show(request: dict[str, Any]) -> None:
    output.fields(request, SHOWN)
    findings = request.get("findings") or {}
    files = findings.get("files") or []
    if files:
        output.table(
            files,
            [
                ("file_id", "file"),
                ("data_source", "data source"),
                ("matching_lines", "matching lines"),
                ("line_numbers", "line numbers"),
            ],
            title="files that mention the subject",
        )
    models = findings.get("models") or []
    if models:
        output.table(
            [m if isinstance(m, dict) else {"id": m} for m in models],
            [("id", "model"), ("status", "status")],
            title="models trained on them (flagged)",
        )
    rest = {k: v for k, v in findings.items() if k not in {"files", "models"}}
    if rest:
        output.fields(rest)
    search = request.get("search")
    if search:
        output.fields(
            search,
            [
                "status",
                "files_done",
                "files_total",
                "lines_scanned",
                "lines_total",
                "resumed",
                "started_at",
                "finished_at",
                "error",
            ],
        )


@erasure_app.command("request")
def request(
    ctx: typer.Context,
    subject: Annotated[
        str | None,
        typer.Option(
            help="the subject's identifier as it appears in the data (default: read from "
            "stdin, so it stays out of the shell history)"
        ),
    ] = None,
    reference: Annotated[str | None, typer.Option(help="your ticket or case number")] = None,
    wait: Annotated[
        bool,
        typer.Option(help="follow a background search to its end (else print and return)"),
    ] = True,
    json_flag: JsonFlag = False,
) -> None:
    """Find every stored file version (and model) that mentions a data subject. A search
    over much data runs in the background: it is followed with a progress bar."""
    if subject is None:
        subject = (
            typer.prompt("subject identifier", hide_input=True)
            if sys.stdin.isatty()
            else sys.stdin.readline().strip()
        )
    body = {"subject": subject, "reference": reference}
    api = client(ctx)
    filed = api.post("/v1/erasure_requests", json=body)
    if filed.get("status") == "searching" and wait:
        filed = follow_search(api, filed)
    emit(ctx, filed, json_flag=json_flag, human=show)


def follow_search(api: Any, filed: dict[str, Any]) -> dict[str, Any]:
    """A background search, followed to its end with a bar (files, lines and bytes)."""
    current = filed
    with progress.transfer() as bar:
        task = bar.add_task("searching", total=(current.get("search") or {}).get("bytes_total"))
        while current.get("status") == "searching":
            search = current.get("search") or {}
            bar.update(
                task,
                completed=search.get("bytes_scanned", 0),
                description=(
                    f"searching: {search.get('files_done', 0)}/{search.get('files_total', 0)}"
                    f" files, {search.get('lines_scanned', 0)} lines"
                ),
            )
            time.sleep(POLL_SECONDS)
            current = api.get(f"/v1/erasure_requests/{filed['id']}")
    return current


@erasure_app.command("status")
def status(
    ctx: typer.Context,
    request_id: Annotated[str | None, typer.Argument(help="one request; all when left out")] = None,
    json_flag: JsonFlag = False,
) -> None:
    """One erasure request, or the list of them."""
    api = client(ctx)
    if request_id is not None:
        emit(ctx, api.get(f"/v1/erasure_requests/{request_id}"), json_flag=json_flag, human=show)
        return
    page = api.get("/v1/erasure_requests")
    emit(
        ctx,
        page,
        json_flag=json_flag,
        human=lambda p: output.table(
            p.get("data", []),
            [
                ("id", "id"),
                ("status", "status"),
                ("reference", "reference"),
                ("requested_at", "requested"),
                ("decision", "decision"),
            ],
        ),
    )


@erasure_app.command("decide")
def decide(
    ctx: typer.Context,
    request_id: str,
    decision: Annotated[str, typer.Option(help="delete_data, retrain or accept")],
    reason: Annotated[str | None, typer.Option(help="required to accept")] = None,
    destroy_salt: Annotated[
        bool, typer.Option(help="forget the link between the request and the person")
    ] = False,
    json_flag: JsonFlag = False,
) -> None:
    """Decide an open erasure request."""
    body = {"decision": decision, "reason": reason, "destroy_salt": destroy_salt}
    emit(
        ctx,
        client(ctx).post(f"/v1/erasure_requests/{request_id}/decide", json=body),
        json_flag=json_flag,
        human=show,
    )
