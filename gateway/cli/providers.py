"""`tunegate providers ...`: register, list, show and retire the external fine-tuning
providers data may be exported to (admins), and check an export before asking for one."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.markup import escape

from gateway.cli import output
from gateway.cli.app import app
from gateway.cli.context import JsonFlag, client, emit

providers_app = typer.Typer(
    help="External fine-tuning providers: create, list, show, delete, export-check.",
    no_args_is_help=True,
)
app.add_typer(providers_app, name="providers")

COLUMNS = [
    ("name", "name"),
    ("status", "status"),
    ("kind", "kind"),
    ("base_url", "base url"),
    ("regions", "regions"),
    ("models", "models"),
]
SHOWN = [
    "name",
    "status",
    "kind",
    "base_url",
    "regions",
    "models",
    "credential_ref",
    "description",
    "registered_by",
    "created_at",
    "retired_by",
    "retired_at",
]


def show(provider: dict[str, Any]) -> None:
    output.fields(provider, SHOWN)


def _offered(pairs: list[str]) -> list[dict[str, str]]:
    offered = []
    for pair in pairs:
        name, sep, provider_model = pair.partition("=")
        if not sep or not name or not provider_model:
            raise typer.BadParameter(f"{pair!r} is not NAME=PROVIDER_MODEL", param_hint="--model")
        offered.append({"name": name, "provider_model": provider_model})
    return offered


@providers_app.command("create")
def create(
    ctx: typer.Context,
    name: Annotated[str, typer.Option(help="a lowercase slug (provider:<name> in the policy)")],
    base_url: Annotated[
        str, typer.Option(help="its OpenAI-compatible API (https; http only for localhost)")
    ],
    model: Annotated[
        list[str],
        typer.Option(
            "--model", help="NAME=PROVIDER_MODEL: a model it offers, under your name; repeat"
        ),
    ],
    region: Annotated[
        list[str], typer.Option("--region", help="a region it processes data in; repeat")
    ],
    credential_ref: Annotated[
        str,
        typer.Option(
            help="where its API key is read from: env:TUNEGATE_PROVIDER_<NAME> or file:/path "
            "(never the key itself)"
        ),
    ],
    kind: Annotated[str, typer.Option(help="openai-compatible")] = "openai-compatible",
    description: Annotated[str, typer.Option()] = "",
    json_flag: JsonFlag = False,
) -> None:
    """Register a provider (admins)."""
    body = {
        "name": name,
        "base_url": base_url,
        "kind": kind,
        "models": _offered(model),
        "regions": region,
        "credential_ref": credential_ref,
        "description": description,
    }
    emit(ctx, client(ctx).post("/v1/providers", json=body), json_flag=json_flag, human=show)


@providers_app.command("list")
def list_providers(
    ctx: typer.Context,
    status: Annotated[str | None, typer.Option(help="active or retired")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 100,
    after: Annotated[str | None, typer.Option(help="cursor from the page before")] = None,
    json_flag: JsonFlag = False,
) -> None:
    """The providers you may read."""
    page = client(ctx).get(
        "/v1/providers", params={"status": status, "limit": limit, "after": after}
    )

    def human(data: dict[str, Any]) -> None:
        rows = [
            {**p, "models": [m["name"] for m in p.get("models", [])]} for p in data.get("data", [])
        ]
        output.table(rows, COLUMNS)
        if data.get("next_after"):
            output.stderr.print(f"more: --after {escape(str(data['next_after']))}")

    emit(ctx, page, json_flag=json_flag, human=human)


@providers_app.command("show")
def show_provider(ctx: typer.Context, name: str, json_flag: JsonFlag = False) -> None:
    """One provider."""
    emit(ctx, client(ctx).get(f"/v1/providers/{name}"), json_flag=json_flag, human=show)


@providers_app.command("delete")
def delete(ctx: typer.Context, name: str, json_flag: JsonFlag = False) -> None:
    """Retire a provider (admins): nothing is exported to it again; its record stays and its
    name is never reused."""
    emit(ctx, client(ctx).delete(f"/v1/providers/{name}"), json_flag=json_flag, human=show)


@providers_app.command("export-check")
def export_check(
    ctx: typer.Context,
    name: str,
    data_source: Annotated[str, typer.Option(help="the data source to export (its id)")],
    json_flag: JsonFlag = False,
) -> None:
    """Dry run: may you send the data source's data to the provider? Exits 1 when not."""
    decision = client(ctx).post(
        f"/v1/providers/{name}/export_check", json={"data_source": data_source}
    )

    def human(data: dict[str, Any]) -> None:
        verdict = "allowed" if data.get("allowed") else "refused"
        output.stdout.print(
            f"export of {escape(str(data.get('data_source')))} to "
            f"{escape(str(data.get('provider')))}: {verdict} "
            f"(policy {escape(str(data.get('policy_version', ''))[:12])})"
        )
        for refusal in data.get("refusals", []):
            output.stdout.print(
                f"  {escape(str(refusal.get('gate')))}: {escape(str(refusal.get('code')))}: "
                f"{escape(str(refusal.get('message')))}"
            )

    emit(ctx, decision, json_flag=json_flag, human=human)
    if not decision.get("allowed"):
        raise typer.Exit(1)
