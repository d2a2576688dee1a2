"""`tunegate witness`: run a C2SP tlog witness for other tunegate gateways (or any log)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gateway.cli.app import app

witness_app = typer.Typer(
    help="A tlog witness: cosigns checkpoints of logs it knows.", no_args_is_help=True
)
app.add_typer(witness_app, name="witness")

KeyOption = Annotated[
    Path,
    typer.Option("--key", envvar="TUNEGATE_WITNESS_KEY", help="the witness's Ed25519 key (PEM)"),
]
NameOption = Annotated[
    str,
    typer.Option(
        "--name", envvar="TUNEGATE_WITNESS_NAME", help="the witness's key name (schema-less URL)"
    ),
]


@witness_app.command("init")
def init(key: KeyOption, name: NameOption) -> None:
    """Create the witness key at KEY (refuses to overwrite) and print its vkey."""
    from audit.cosignature import cosigner_vkey
    from gateway.witness.app import create_key

    try:
        private = create_key(key)
    except FileExistsError:
        typer.echo(f"error: {key} exists; not overwritten", err=True)
        raise typer.Exit(1) from None
    typer.echo(cosigner_vkey(name, private.public_key()))


@witness_app.command("vkey")
def vkey(key: KeyOption, name: NameOption) -> None:
    """Print the witness's verifier key (give it to the gateway: TUNEGATE_AUDIT_WITNESSES)."""
    from audit.cosignature import cosigner_vkey
    from gateway.witness.app import load_key

    typer.echo(cosigner_vkey(name, load_key(key).public_key()))


@witness_app.command("serve")
def serve(
    key: KeyOption,
    name: NameOption,
    log: Annotated[
        list[str],
        typer.Option(
            "--log",
            envvar="TUNEGATE_WITNESS_LOGS",
            help="a log's vkey (its name is its origin), or ORIGIN=VKEY; repeat for several",
        ),
    ],
    db: Annotated[
        str, typer.Option(envvar="TUNEGATE_WITNESS_DB", help="SQLite path or SQLAlchemy URL")
    ] = "./var/witness.db",
    host: Annotated[str, typer.Option(help="interface to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8400,
    fsync: Annotated[
        bool,
        typer.Option(
            envvar="TUNEGATE_WITNESS_FSYNC",
            help="SQLite: fsync every commit before answering (--no-fsync: faster, and a "
            "power cut may lose the last cosigned state)",
        ),
    ] = True,
) -> None:
    """Serve POST /add-checkpoint (C2SP tlog-witness) until SIGTERM/Ctrl-C."""
    import uvicorn

    from gateway.witness.app import WitnessConfig, create_witness_app, database_url

    config = WitnessConfig(
        name=name, key_path=key, database_url=database_url(db), log_vkeys=log, fsync=fsync
    )
    uvicorn.run(
        create_witness_app(config), host=host, port=port, log_level="warning", access_log=False
    )


@witness_app.command("verify")
def verify(
    note_file: Annotated[
        Path, typer.Argument(help="a checkpoint note with cosignature lines ('-': stdin)")
    ],
    log_key: Annotated[
        list[str], typer.Option("--log", help="the log's vkey (repeat for several); checked first")
    ] = [],  # noqa: B006
    witness: Annotated[
        list[str], typer.Option("--witness", help="a trusted witness's vkey; repeat for N")
    ] = [],  # noqa: B006
    quorum: Annotated[
        int, typer.Option(help="cosignatures required (K of the N witnesses)", min=0)
    ] = 1,
) -> None:
    """Check a checkpoint offline: the log's signature (with --log) and K of N witness
    cosignatures. Exit 0 when both hold, 1 otherwise."""
    import sys

    from audit.cosignature import CosignatureError, parse_cosigner_vkey
    from audit.note import NoteError, open_note, parse_vkey
    from audit.witness import QuorumError, require_cosignatures

    note = sys.stdin.read() if str(note_file) == "-" else note_file.read_text(encoding="utf-8")
    try:
        if log_key:
            open_note(note, [parse_vkey(v) for v in log_key])
        keys = [parse_cosigner_vkey(v) for v in witness]
        found = require_cosignatures(note, keys, quorum)
    except (NoteError, CosignatureError, QuorumError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    names = ", ".join(sorted(c.name for c in found)) or "none required"
    typer.echo(f"ok: {len(found)} of {len(keys)} witnesses cosigned ({names})")
