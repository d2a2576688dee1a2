"""`tunegate data-sources ...`: propose, approve and revoke the data sources training
data lives in (four eyes: whoever proposes one cannot approve it)."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.markup import escape

from gateway.cli import output
from gateway.cli.app import app
from gateway.cli.context import JsonFlag, client, emit

sources_app = typer.Typer(
    help="Data sources: propose, list, approve, revoke.", no_args_is_help=True
)
app.add_typer(sources_app, name="data-sources")

COLUMNS = [
    ("id", "id"),
    ("name", "name"),
    ("status", "status"),
    ("classification", "classification"),
    ("pii_action", "pii"),
    ("allowed_purposes", "purposes"),
    ("owner", "owner"),
]
SHOWN = [
    "id",
    "name",
    "status",
    "classification",
    "contains_personal_data",
    "legal_basis",
    "allowed_purposes",
    "owner",
    "retention_days",
    "pii_action",
    "min_examples",
    "proposed_by",
    "proposed_at",
    "approved_by",
    "approved_at",
    "approval_policy_version",
    "revoked_by",
    "revoked_at",
    "revoke_reason",
]


def show(source: dict[str, Any]) -> None:
    output.fields(source, SHOWN)


@sources_app.command("propose")
def propose(
    ctx: typer.Context,
    name: Annotated[str, typer.Option(help="a name unique in the tenant")],
    classification: Annotated[str, typer.Option(help="public, internal, confidential, restricted")],
    purpose: Annotated[
        list[str], typer.Option("--purpose", help="an allowed purpose; repeat for several")
    ],
    owner: Annotated[str, typer.Option(help="the accountable data owner (subject id)")],
    retention_days: Annotated[int, typer.Option(min=1)],
    description: Annotated[str, typer.Option()] = "",
    personal_data: Annotated[
        bool, typer.Option("--personal-data/--no-personal-data", help="holds personal data")
    ] = False,
    legal_basis: Annotated[str | None, typer.Option(help="GDPR Art. 6(1) basis")] = None,
    pii_action: Annotated[str, typer.Option(help="block, redact or allow")] = "block",
    min_examples: Annotated[int, typer.Option(min=1)] = 500,
    json_flag: JsonFlag = False,
) -> None:
    """Propose a data source (a compliance officer approves it)."""
    body = {
        "name": name,
        "description": description,
        "classification": classification,
        "contains_personal_data": personal_data,
        "legal_basis": legal_basis,
        "allowed_purposes": purpose,
        "owner": owner,
        "retention_days": retention_days,
        "pii_action": pii_action,
        "min_examples": min_examples,
    }
    emit(ctx, client(ctx).post("/v1/data_sources", json=body), json_flag=json_flag, human=show)


@sources_app.command("list")
def list_sources(
    ctx: typer.Context,
    status: Annotated[str | None, typer.Option(help="proposed, approved or revoked")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 100,
    after: Annotated[str | None, typer.Option(help="cursor from the page before")] = None,
    json_flag: JsonFlag = False,
) -> None:
    """The tenant's data sources you may read."""
    page = client(ctx).get(
        "/v1/data_sources", params={"status": status, "limit": limit, "after": after}
    )

    def human(data: dict[str, Any]) -> None:
        output.table(data.get("data", []), COLUMNS)
        if data.get("next_after"):
            output.stderr.print(f"more: --after {escape(str(data['next_after']))}")

    emit(ctx, page, json_flag=json_flag, human=human)


@sources_app.command("get")
def get_source(ctx: typer.Context, data_source_id: str, json_flag: JsonFlag = False) -> None:
    """One data source."""
    emit(
        ctx,
        client(ctx).get(f"/v1/data_sources/{data_source_id}"),
        json_flag=json_flag,
        human=show,
    )


@sources_app.command("approve")
def approve(ctx: typer.Context, data_source_id: str, json_flag: JsonFlag = False) -> None:
    """Approve a proposed data source (not your own proposal)."""
    emit(
        ctx,
        client(ctx).post(f"/v1/data_sources/{data_source_id}/approve"),
        json_flag=json_flag,
        human=show,
    )


@sources_app.command("revoke")
def revoke(
    ctx: typer.Context,
    data_source_id: str,
    reason: Annotated[str, typer.Option(help="why (kept on the source)")],
    json_flag: JsonFlag = False,
) -> None:
    """Revoke a data source: nothing new is uploaded to it or trained on it."""
    emit(
        ctx,
        client(ctx).post(f"/v1/data_sources/{data_source_id}/revoke", json={"reason": reason}),
        json_flag=json_flag,
        human=show,
    )
