"""Rendering for people (rich tables on stdout, errors on stderr) and for scripts (JSON)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

stdout = Console(highlight=False, soft_wrap=True)
stderr = Console(stderr=True, highlight=False, soft_wrap=True)


def reset() -> None:
    """Consoles for this command's environment (COLUMNS, NO_COLOR, the streams it was given),
    read when it starts rather than when the module was first imported."""
    global stdout, stderr
    stdout = Console(highlight=False, soft_wrap=True)
    stderr = Console(stderr=True, highlight=False, soft_wrap=True)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def print_error(
    *, code: str, message: str, status: int | None = None, param: str | None = None
) -> None:
    """`error: <code> (<status>): <message>`, the API's own words, all as plain text."""
    where = f" [param {param}]" if param else ""
    shown = f" ({status})" if status else ""
    stderr.print(f"[bold red]error[/]: {escape(code)}{shown}: {escape(message)}{escape(where)}")


def table(
    rows: Iterable[dict[str, Any]], columns: Sequence[tuple[str, str]], *, title: str | None = None
) -> None:
    """A table of `rows` with `columns` as (key, heading); values shown as escaped text."""
    view = Table(title=title, show_lines=False, header_style="bold")
    for _key, heading in columns:
        view.add_column(heading)
    for row in rows:
        view.add_row(*(escape(cell(row.get(key), key=key)) for key, _heading in columns))
    stdout.print(view)


def fields(data: dict[str, Any], keys: Sequence[str] | None = None) -> None:
    """One `key: value` line per field (nested values as compact JSON)."""
    for key in keys or list(data):
        if key in data:
            stdout.print(f"[bold]{escape(key)}[/]: {escape(cell(data[key], key=key))}")


def cell(value: Any, *, key: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int) and (key.endswith("_at") or key in {"created", "created_at"}):
        return timestamp(value)
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return str(value)


def timestamp(seconds: int | float | None) -> str:
    if seconds is None:
        return "-"
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%SZ")
