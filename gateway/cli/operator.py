"""Operator commands: the schema, the server, workers and dev tokens."""

from __future__ import annotations

from typing import Annotated

import typer

from gateway.cli.app import app

db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
app.add_typer(db_app, name="db")


@db_app.command("upgrade")
def db_upgrade(revision: str = "head") -> None:
    """Bring the schema to REVISION (default: head) and load the seed policy if empty."""
    from gateway.bootstrap import prepare_database
    from gateway.config import get_settings

    settings = get_settings()
    prepare_database(settings, revision=revision)
    typer.echo(f"database at {revision}")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="interface to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8000,
    workers: Annotated[int, typer.Option(help="uvicorn worker processes")] = 1,
) -> None:
    """Run the gateway (the schema must be at head: `tunegate db upgrade`)."""
    import uvicorn

    uvicorn.run(
        "gateway.main:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="warning",
        access_log=False,
    )


@app.command()
def token(
    sub: Annotated[str, typer.Option(help="subject (user id)")],
    role: Annotated[list[str], typer.Option(help="role name; repeat for several")] = [],  # noqa: B006
    tenant: Annotated[str, typer.Option(help="tenant")] = "default",
    ttl: Annotated[int, typer.Option(help="lifetime in seconds", min=1, max=86_400 * 30)] = 3600,
) -> None:
    """Print a signed dev token (HS256 with TUNEGATE_JWT_SECRET)."""
    from gateway.config import get_settings
    from gateway.security import TokenMintingError, mint_dev_token

    try:
        typer.echo(mint_dev_token(get_settings(), sub=sub, roles=role, tenant=tenant, ttl=ttl))
    except TokenMintingError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


@app.command()
def worker(
    device_index: Annotated[
        int, typer.Option(help="CUDA device this worker trains on (mod the device count)")
    ] = 0,
    until_idle: Annotated[
        bool, typer.Option(help="exit once no queued job is left instead of waiting for more")
    ] = False,
) -> None:
    """Run one local job worker: claims queued jobs, one at a time, until SIGTERM/Ctrl-C
    (a running job then goes back to the queue, to resume from its last checkpoint)."""
    import signal
    import threading

    from gateway.config import get_settings
    from gateway.executors.local import new_worker_id, pin_device, work
    from gateway.logging import configure_logging

    settings = get_settings()
    configure_logging(json_logs=settings.json_logs)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    pin_device(device_index)
    work(settings, worker_id=new_worker_id(), stop=stop, until_idle=until_idle)
