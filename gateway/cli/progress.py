"""Progress bars for the client commands, drawn on stderr so stdout keeps only results
(and `--json` output stays clean)."""

from __future__ import annotations

from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from gateway.cli import output


def transfer() -> Progress:
    """Bytes moving: a bar, bytes done of total, speed, time left."""
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=output.stderr,
        transient=True,
    )


def counted() -> Progress:
    """Items counted against a total (events, steps)."""
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TimeRemainingColumn(),
        console=output.stderr,
        transient=True,
    )
