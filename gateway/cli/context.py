"""What a client command needs: its profile, the output mode and an API client."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

import typer

from gateway.cli import output
from gateway.client import Client
from gateway.client.profiles import Profile, resolve

JsonFlag = Annotated[bool, typer.Option("--json", help="print exactly the API's JSON, for scripts")]


@dataclass
class CliState:
    profile: str | None = None
    json_output: bool = False
    _client: Client | None = field(default=None, repr=False)

    def resolved_profile(self) -> Profile:
        return resolve(self.profile)

    def client(self, *, timeout: float = 30.0) -> Client:
        if self._client is None:
            profile = self.resolved_profile()
            self._client = Client(profile.url, profile.token, timeout=timeout)
        return self._client


def state(ctx: typer.Context) -> CliState:
    """The root's state (a default one when a command runs without the root callback)."""
    root = ctx.find_root()
    if not isinstance(root.obj, CliState):
        root.obj = CliState()
    return root.obj


def client(ctx: typer.Context, *, timeout: float = 30.0) -> Client:
    return state(ctx).client(timeout=timeout)


def wants_json(ctx: typer.Context, json_flag: bool) -> bool:
    return json_flag or state(ctx).json_output


def emit(ctx: typer.Context, data: Any, *, json_flag: bool, human: Callable[[Any], None]) -> None:
    """The API's JSON with `--json`, else the human rendering."""
    if wants_json(ctx, json_flag):
        output.print_json(data)
    else:
        human(data)
