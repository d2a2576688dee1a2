"""`tunegate promotions ...`: promotion as request, then approval. An engineer asks
(`tunegate models promote`); a compliance officer who neither asked nor trained the model
approves or rejects here."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.markup import escape

from gateway.cli import output
from gateway.cli.app import app
from gateway.cli.context import JsonFlag, client, emit

promotions_app = typer.Typer(
    help="Promotion requests: list the queue, show one, approve or reject (four eyes).",
    no_args_is_help=True,
)
app.add_typer(promotions_app, name="promotions")

REQUEST_COLUMNS = [
    ("id", "id"),
    ("model_id", "model"),
    ("status", "status"),
    ("verdict", "verdict"),
    ("requested_by", "asked by"),
    ("decided_by", "decided by"),
]
REQUEST_FIELDS = [
    "id",
    "model_id",
    "status",
    "reason",
    "verdict",
    "override_reason",
    "trained_by",
    "requested_by",
    "requested_at",
    "request_policy_version",
    "decided_by",
    "decided_at",
    "decision_reason",
    "decision_policy_version",
]


def show(request: dict[str, Any]) -> None:
    output.fields(request, REQUEST_FIELDS)


@promotions_app.command("list")
def list_requests(
    ctx: typer.Context,
    status: Annotated[
        str | None, typer.Option(help="pending (the approval queue), approved, rejected")
    ] = None,
    model: Annotated[str | None, typer.Option(help="only this model's requests")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 100,
    after: Annotated[
        str | None, typer.Option(help="cursor: the last id of the page before")
    ] = None,
    json_flag: JsonFlag = False,
) -> None:
    """Promotion requests of your tenant whose model you may read, newest first."""
    page = client(ctx).get(
        "/v1/promotion_requests",
        params={"status": status, "model_id": model, "limit": limit, "after": after},
    )

    def human(data: dict[str, Any]) -> None:
        output.table(data.get("data", []), REQUEST_COLUMNS)
        if data.get("has_more"):
            output.stderr.print(f"more: --after {escape(str(data['last_id']))}")

    emit(ctx, page, json_flag=json_flag, human=human)


@promotions_app.command("get")
def get_request(ctx: typer.Context, request_id: str, json_flag: JsonFlag = False) -> None:
    """One promotion request: the verdict it was asked on, who asked, who decided."""
    found = client(ctx).get(f"/v1/promotion_requests/{request_id}")
    emit(ctx, found, json_flag=json_flag, human=show)


@promotions_app.command("approve")
def approve(
    ctx: typer.Context,
    request_id: str,
    reason: Annotated[str | None, typer.Option(help="a note on the approval")] = None,
    json_flag: JsonFlag = False,
) -> None:
    """Approve: the model goes to production (never by who asked or who trained it)."""
    body = {"reason": reason} if reason else None
    decided = client(ctx).post(f"/v1/promotion_requests/{request_id}/approve", json=body)
    emit(ctx, decided, json_flag=json_flag, human=show)


@promotions_app.command("reject")
def reject(
    ctx: typer.Context,
    request_id: str,
    reason: Annotated[str, typer.Option(help="why the promotion is refused")],
    json_flag: JsonFlag = False,
) -> None:
    """Reject, with the reason the requester will read."""
    decided = client(ctx).post(
        f"/v1/promotion_requests/{request_id}/reject", json={"reason": reason}
    )
    emit(ctx, decided, json_flag=json_flag, human=show)
