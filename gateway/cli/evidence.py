"""`tunegate evidence`: download a model's evidence bundle (GET /v1/models/{id}/evidence)
and check it offline, with no database and no gateway."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from gateway.cli import output
from gateway.cli.app import app
from gateway.cli.context import client

evidence_app = typer.Typer(help="Evidence bundles: check them offline.", no_args_is_help=True)
app.add_typer(evidence_app, name="evidence")


def _vkey(value: str) -> str:
    """A vkey given as itself or as a file holding it."""
    if "+" in value:
        return value.strip()
    try:
        return Path(value).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise typer.BadParameter(f"{value}: neither a vkey nor a readable file ({exc})") from None


@evidence_app.command("download")
def download(
    ctx: typer.Context,
    model_id: str,
    out: Annotated[Path, typer.Option("-o", "--output", help="the zip to write")],
) -> None:
    """Download the model's evidence bundle to OUT, checking it against the sha256 the
    gateway states (x-evidence-sha256, also in its model.evidence_exported audit event);
    nothing is left at OUT when they differ. Check it with `tunegate evidence verify`."""
    api = client(ctx)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    try:
        digest = hashlib.sha256()
        with (
            os.fdopen(fd, "wb") as handle,
            api.stream("GET", f"/v1/models/{model_id}/evidence") as response,
        ):
            stated = response.headers.get("x-evidence-sha256")
            for chunk in response.iter_bytes():
                digest.update(chunk)
                handle.write(chunk)
        if stated is not None and stated != digest.hexdigest():
            raise typer.BadParameter(
                f"the bundle's sha256 is {digest.hexdigest()}, the gateway stated {stated}"
            )
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    output.stderr.print(f"wrote {escape(str(out))} (sha256 {digest.hexdigest()})")


@evidence_app.command("verify")
def verify(
    bundle: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, help="the zip of GET .../evidence")
    ],
    key: Annotated[
        str | None,
        typer.Option(
            "--key", help="the log's vkey you trust (or a file); default: the bundled one"
        ),
    ] = None,
    witness: Annotated[
        list[str] | None,
        typer.Option("--witness", help="a witness vkey you trust (or a file); repeatable"),
    ] = None,
    quorum: Annotated[
        int, typer.Option("--quorum", min=0, help="witness cosignatures required (K of N)")
    ] = 0,
) -> None:
    """Check the checkpoint's signature (and K witness cosignatures), each event's leaf
    hash and inclusion proof, the dossier's and lineage's facts against the events, and
    every member against MANIFEST.json. Exit 1 naming the first part that fails."""
    from gateway.evidence.verify import verify as check

    verdict = check(
        str(bundle),
        key=_vkey(key) if key else None,
        witnesses=[_vkey(w) for w in witness or []],
        quorum=quorum,
    )
    for line in verdict.checked:
        typer.echo(f"ok  {line}")
    if not verdict.ok:
        typer.echo(f"FAILED: {verdict.error}")
        raise typer.Exit(1)
    typer.echo(f"OK: {bundle} verifies")
