"""The root `tunegate` command: global options, and API errors turned into exit codes.

Exit codes: 0 ok, 1 refused or failed (the API's code and message printed), 2 usage error,
3 cannot reach the gateway (or no gateway configured). Never a traceback for those.
"""

from __future__ import annotations

from typing import Annotated, Any

import click
import typer
from typer.core import TyperGroup

from gateway.cli import output
from gateway.cli.output import print_error
from gateway.client import ApiError, GatewayUnreachable
from gateway.client.profiles import ProfileError

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3


class GatewayGroup(TyperGroup):
    """Runs every subcommand inside one place that maps client errors to exit codes."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ApiError as exc:
            print_error(code=exc.code, message=exc.message, status=exc.status, param=exc.param)
            raise typer.Exit(EXIT_FAILED) from None
        except GatewayUnreachable as exc:
            print_error(code="gateway_unreachable", message=str(exc))
            raise typer.Exit(EXIT_UNREACHABLE) from None
        except ProfileError as exc:
            print_error(code="no_profile", message=str(exc))
            raise typer.Exit(EXIT_UNREACHABLE) from None


app = typer.Typer(
    cls=GatewayGroup,
    help="tunegate: a governance gateway for LLM fine-tuning.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.callback()
def root(
    ctx: typer.Context,
    profile: Annotated[
        str | None,
        typer.Option(
            "--profile", envvar="TUNEGATE_PROFILE", help="stored gateway profile (`tunegate login`)"
        ),
    ] = None,
    json_output: Annotated[
        bool, typer.Option("--json", help="print exactly the API's JSON, for scripts")
    ] = False,
) -> None:
    """Operator commands (serve, db, worker, token) and client commands for every user."""
    from gateway.cli.context import CliState

    output.reset()
    ctx.obj = CliState(profile=profile, json_output=json_output)
