"""Erasure support: which lines of a stored file mention a data subject's identifier.

The file is streamed; a C-level substring search over lower-cased raw bytes picks candidate
lines, and only those are decoded and checked (case-insensitively, inside every string
value). The needle is the identifier's longest run of characters a JSON encoder never
escapes, so candidates are found whether the file spells non-ASCII characters raw or as
``\\uXXXX``; lines that escape printable ASCII are always checked. Only line numbers come
back; the identifier is never logged.
"""

from __future__ import annotations

import json
import re
from bisect import bisect_right
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

_READ_BYTES: Final = 4 << 20
_VERBATIM_RUN = re.compile(r"[\x20-\x21\x23-\x2e\x30-\x5b\x5d-\x7e]+")
_ESCAPED_ASCII = re.compile(rb"\\u00[2-7][0-9A-Fa-f]")


@dataclass(frozen=True)
class SubjectMatches:
    lines: list[int]  # 1-based, ascending

    @property
    def count(self) -> int:
        return len(self.lines)


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def _mentions(line: bytes, folded: str) -> bool:
    try:
        value = json.loads(line)
    except ValueError:
        return folded in line.decode("utf-8", "replace").casefold()
    return any(folded in text.casefold() for text in _strings(value))


def _lines(path: Path) -> Iterator[tuple[int, bytes, bytes]]:
    """(first line number, block of whole lines, its lower-cased copy)."""
    line_number = 1
    carry = b""
    with open(path, "rb") as handle:
        while block := handle.read(_READ_BYTES):
            block = carry + block
            cut = block.rfind(b"\n")
            if cut < 0:
                carry = block
                continue
            whole, carry = block[: cut + 1], block[cut + 1 :]
            yield line_number, whole, whole.lower()
            line_number += whole.count(b"\n")
    if carry:
        yield line_number, carry, carry.lower()


def find_subject_lines(
    path: Path, identifier: str, *, progress: Callable[[int, int], None] | None = None
) -> SubjectMatches:
    """Line numbers of ``path`` whose strings contain ``identifier`` (case-insensitive).
    ``progress(lines, bytes)`` is called after each block read with that block's counts;
    an exception it raises stops the search."""
    folded = identifier.strip().casefold()
    if not folded:
        raise ValueError("the subject identifier is empty")
    runs = _VERBATIM_RUN.findall(identifier.strip())
    needle = max(runs, key=len).lower().encode() if runs else b""
    found: list[int] = []
    for first_line, block, lowered in _lines(Path(path)):
        starts = _line_starts(block)
        candidates: set[int] = set()
        if len(needle) >= 3:
            position = lowered.find(needle)
            while position != -1:
                candidates.add(_index(starts, position))
                position = lowered.find(needle, position + 1)
            for match in _ESCAPED_ASCII.finditer(block):
                candidates.add(_index(starts, match.start()))
        else:
            candidates = set(range(len(starts)))
        for index in sorted(candidates):
            end = starts[index + 1] - 1 if index + 1 < len(starts) else len(block)
            if _mentions(block[starts[index] : end], folded):
                found.append(first_line + index)
        if progress is not None:
            progress(len(starts), len(block))
    return SubjectMatches(found)


def _line_starts(block: bytes) -> list[int]:
    starts = [0]
    position = block.find(b"\n")
    while position != -1 and position + 1 < len(block):
        starts.append(position + 1)
        position = block.find(b"\n", position + 1)
    return starts


def _index(starts: list[int], position: int) -> int:
    return bisect_right(starts, position) - 1
