"""`tunegate login | logout | profiles`: gateways and tokens, kept in the profiles file
(gateway.client.profiles: mode 0600 in the user's config dir). A token is read from a
hidden prompt, stdin or an OIDC sign-in, and never printed."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.markup import escape

from gateway.cli import output
from gateway.cli.app import EXIT_FAILED, app
from gateway.cli.context import JsonFlag, state, wants_json
from gateway.client import ApiError, Client
from gateway.client import profiles as store
from gateway.client.oidc import DeviceFlow, OidcError

ProfileOption = Annotated[
    str | None, typer.Option("--profile", help="profile name (default: `default`)")
]


def _profile_name(ctx: typer.Context, profile: str | None) -> str:
    return profile or state(ctx).profile or store.DEFAULT_PROFILE


def _read_token(token: str | None) -> str:
    """--token VALUE, or `--token -` / no --token: from stdin, or a hidden prompt on a
    terminal (so the token stays out of the shell history)."""
    if token not in (None, "-"):
        return token
    if token is None and sys.stdin.isatty():
        return typer.prompt("token", hide_input=True).strip()
    return sys.stdin.readline().strip()


def _check(url: str, token: str) -> None:
    """The gateway answers, and takes the token: every role may list data sources, and a
    403 still means the token was accepted; a 401 is raised (exit 1, nothing stored)."""
    with Client(url, token) as api:
        api.get("/healthz")
        try:
            api.get("/v1/data_sources", params={"limit": 1})
        except ApiError as exc:
            if exc.status != 403:
                raise


@app.command()
def login(
    ctx: typer.Context,
    url: Annotated[str, typer.Option("--url", help="the gateway's base URL")],
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            help="a bearer token; `-` or leaving it out reads it from stdin or a hidden prompt",
        ),
    ] = None,
    oidc: Annotated[
        bool, typer.Option("--oidc", help="sign in at the OIDC provider (device code)")
    ] = False,
    issuer: Annotated[
        str | None, typer.Option(envvar="TUNEGATE_OIDC_ISSUER", help="the OIDC issuer URL")
    ] = None,
    client_id: Annotated[
        str | None, typer.Option(envvar="TUNEGATE_OIDC_CLIENT_ID", help="the CLI's client id")
    ] = None,
    scope: Annotated[str, typer.Option(help="OIDC scopes")] = "openid",
    audience: Annotated[str | None, typer.Option(help="token audience, if asked for")] = None,
    use_id_token: Annotated[
        bool, typer.Option(help="store the ID token (for providers whose access tokens are opaque)")
    ] = False,
    profile: ProfileOption = None,
) -> None:
    """Store a gateway and its token as a profile (the default one unless --profile)."""
    name = _profile_name(ctx, profile)
    url = url.rstrip("/")
    if oidc and token is not None:
        raise typer.BadParameter("give --token or --oidc, not both", param_hint="--oidc")
    if oidc:
        previous = store.stored(name)
        issuer = issuer or (previous.issuer if previous else None)
        client_id = client_id or (previous.client_id if previous else None)
        if not issuer or not client_id:
            raise typer.BadParameter("--oidc needs --issuer and --client-id", param_hint="--oidc")
        secret = _device_sign_in(issuer, client_id, scope, audience, use_id_token)
    else:
        secret = _read_token(token)
        if not secret:
            raise typer.BadParameter("no token given", param_hint="--token")
    _check(url, secret)
    path = store.save(
        store.Profile(
            name=name,
            url=url,
            token=secret,
            issuer=issuer if oidc else None,
            client_id=client_id if oidc else None,
        )
    )
    output.stderr.print(
        f"logged in to {escape(url)} as profile [bold]{escape(name)}[/] "
        f"(token stored in {escape(str(path))}, mode 0600)"
    )


def _device_sign_in(
    issuer: str, client_id: str, scope: str, audience: str | None, use_id_token: bool
) -> str:
    flow = DeviceFlow(issuer, client_id, scope=scope, audience=audience)
    try:
        authorization = flow.start()
        where = authorization.verification_uri_complete or authorization.verification_uri
        output.stderr.print(
            f"open [bold]{escape(where)}[/] and enter the code "
            f"[bold]{escape(authorization.user_code)}[/] (it expires in "
            f"{authorization.expires_in // 60} min); waiting..."
        )
        tokens = flow.wait(authorization)
    except OidcError as exc:
        output.print_error(code=exc.code, message=exc.message)
        raise typer.Exit(EXIT_FAILED) from None
    if use_id_token:
        if not tokens.id_token:
            output.print_error(code="no_id_token", message="the provider sent no ID token")
            raise typer.Exit(EXIT_FAILED)
        return tokens.id_token
    return tokens.access_token


@app.command()
def logout(ctx: typer.Context, profile: ProfileOption = None) -> None:
    """Forget a profile and its token."""
    name = _profile_name(ctx, profile)
    if not store.remove(name):
        output.print_error(code="no_profile", message=f"no profile named {name!r}")
        raise typer.Exit(EXIT_FAILED)
    output.stderr.print(f"removed profile [bold]{escape(name)}[/]")


@app.command("profiles")
def list_profiles(ctx: typer.Context, json_flag: JsonFlag = False) -> None:
    """The stored profiles (tokens are never shown)."""
    names, default = store.names()
    rows = []
    for name in names:
        found = store.stored(name)
        rows.append(
            {
                "name": name,
                "default": name == default,
                "url": found.url if found else None,
                "token": "set" if found and found.token else None,
                "oidc_issuer": found.issuer if found else None,
            }
        )
    if wants_json(ctx, json_flag):
        output.print_json({"path": str(store.profiles_path()), "profiles": rows})
        return
    output.table(
        rows,
        [
            ("name", "profile"),
            ("default", "default"),
            ("url", "gateway"),
            ("token", "token"),
            ("oidc_issuer", "OIDC issuer"),
        ],
    )
    output.stderr.print(f"file: {escape(str(store.profiles_path()))}")
