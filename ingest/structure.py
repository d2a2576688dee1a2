"""Structured answers: when most final assistant answers of a file are JSON objects, the
schema they share and the lines that deviate from it. Pure.

Each chunk is ``observe``d where it is scanned (only answers starting with ``{`` are
decoded); ``Observed`` parts merge in file order and ``infer`` decides at the end:

- a key present in at least half the JSON answers belongs to the schema, with the type
  most of its values have; a line lacking one is ``missing_key``, a line with a key of
  fewer than half is ``extra_key``, a value of another type is ``wrong_type`` (an integer
  where numbers are floats is fine);
- a string, integer or boolean key with at most ``LOW_CARDINALITY`` values used by two
  lines or more is a low-cardinality field (a severity, a category): its value set is
  listed, and a string value no other line uses that is close to a common one (one edit
  away, two from eight characters, transpositions included, or a difflib ratio >=
  ``TYPO_RATIO``) is ``unknown_value``, with the value it resembles;
- an answer that is not a JSON object is ``not_json``.

Only short values (``MAX_VALUE_CHARS``) of low-cardinality fields appear; free text never.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import repeat
from operator import itemgetter
from typing import Any, Final

import msgspec
import numpy as np

MOST: Final = 0.5  # share of answers that must be JSON objects
LOW_CARDINALITY: Final = 20
TYPO_RATIO: Final = 0.8
MAX_VALUE_CHARS: Final = 40
MAX_TRACKED_VALUES: Final = 64  # beyond this a key is free text, its values forgotten
MAX_SHAPES: Final = 2048
SHOWN: Final = 100
_COMMON: Final = 3  # uses that make a value "common" for the typo check
_decode = msgspec.json.Decoder().decode
_FIRST = itemgetter(slice(0, 1))
_TYPE_NAMES: Final = {
    str: "string",
    int: "integer",
    float: "number",
    bool: "boolean",
    list: "array",
    dict: "object",
    type(None): "null",
}


@dataclass
class _Values:
    counts: dict[Any, int] = field(default_factory=dict)
    first_line: dict[Any, int] = field(default_factory=dict)
    overflow: bool = False

    def add(self, value: Any, line: int, uses: int = 1) -> None:
        if self.overflow:
            return
        if value in self.counts:
            self.counts[value] += uses
            return
        if len(self.counts) >= MAX_TRACKED_VALUES:
            self.overflow = True
            self.counts.clear()
            self.first_line.clear()
            return
        self.counts[value] = uses
        self.first_line[value] = line


@dataclass
class Observed:
    """What the answers of some lines looked like; ``merge`` in line order."""

    answers: int = 0
    not_json: int = 0
    not_json_lines: list[int] = field(default_factory=list)
    shapes: dict[tuple[tuple[str, str], ...], list[Any]] = field(default_factory=dict)
    values: dict[str, _Values] = field(default_factory=dict)
    too_varied: bool = False

    def merge(self, other: Observed) -> None:
        self.answers += other.answers
        self.not_json += other.not_json
        self.not_json_lines.extend(other.not_json_lines[: SHOWN - len(self.not_json_lines)])
        self.too_varied |= other.too_varied
        for shape, (count, lines) in other.shapes.items():
            if shape in self.shapes:
                mine = self.shapes[shape]
                mine[0] += count
                mine[1].extend(lines[: SHOWN - len(mine[1])])
            elif len(self.shapes) < MAX_SHAPES:
                self.shapes[shape] = [count, list(lines)]
            else:
                self.too_varied = True
        for key, theirs in other.values.items():
            mine_values = self.values.setdefault(key, _Values())
            if theirs.overflow:
                mine_values.overflow = True
                mine_values.counts.clear()
                mine_values.first_line.clear()
                continue
            for value, uses in theirs.counts.items():
                mine_values.add(value, theirs.first_line[value], uses)


def _opening(answers: Sequence[str]) -> np.ndarray:
    """bool per answer: it starts with ``{`` once leading whitespace is stripped. At C
    speed: ``startswith`` on every answer, ``lstrip`` only on those starting with
    whitespace (stripping every answer copied it, and a Python test per answer cost more
    than the rest of ``observe``)."""
    count = len(answers)
    opens = np.fromiter(map(str.startswith, answers, repeat("{")), bool, count)
    spaced = np.fromiter(map(str.isspace, map(_FIRST, answers)), bool, count)
    for index in np.flatnonzero(spaced).tolist():
        opens[index] = answers[index].lstrip().startswith("{")
    return opens


def _type_name(value: Any) -> str:
    return _TYPE_NAMES.get(type(value), "other")


def observe(lines: Sequence[int], answers: Sequence[str]) -> Observed:
    """The answers of one chunk (1-based ``lines``)."""
    seen = Observed(answers=len(answers))
    shapes = seen.shapes
    values = seen.values
    # Answers that cannot be JSON objects are counted at C speed, without a Python loop.
    opens = _opening(answers)
    not_json = np.asarray(lines, dtype=np.int64)[~opens]
    seen.not_json = int(not_json.size)
    seen.not_json_lines = not_json[:SHOWN].tolist()
    if seen.not_json == len(answers):
        return seen
    for index in np.flatnonzero(opens).tolist():
        line, answer = lines[index], answers[index]
        try:
            parsed: Any = _decode(answer)
        except msgspec.DecodeError:
            parsed = None
        if not isinstance(parsed, dict):
            seen.not_json += 1
            if len(seen.not_json_lines) < SHOWN:
                seen.not_json_lines.append(line)
                seen.not_json_lines.sort()
            continue
        shape = tuple(sorted((key, _type_name(value)) for key, value in parsed.items()))
        entry = shapes.get(shape)
        if entry is None:
            if len(shapes) >= MAX_SHAPES:
                seen.too_varied = True
                continue
            entry = shapes[shape] = [0, []]
        entry[0] += 1
        if len(entry[1]) < SHOWN:
            entry[1].append(line)
        for key, value in parsed.items():
            if isinstance(value, str | int | bool) and not (
                isinstance(value, str) and len(value) > MAX_VALUE_CHARS
            ):
                values.setdefault(key, _Values()).add((_type_name(value), value), line)
    return seen


def _edit_distance(left: str, right: str) -> int:
    """Optimal string alignment distance: insertions, deletions, substitutions and
    transpositions of neighbours each cost one."""
    previous2: list[int] = []
    previous = list(range(len(right) + 1))
    for i, a in enumerate(left, 1):
        current = [i] + [0] * len(right)
        for j, b in enumerate(right, 1):
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a != b))
            if i > 1 and j > 1 and a == right[j - 2] and left[i - 2] == b:
                current[j] = min(current[j], previous2[j - 2] + 1)
        previous2, previous = previous, current
    return previous[-1]


def _resembles(value: str, common: list[str]) -> str | None:
    """The common value ``value`` looks like a typo of: one edit away (two for values of
    eight characters or more), or a difflib ratio >= TYPO_RATIO; None if none is."""
    folded = value.casefold()
    best: tuple[float, str] | None = None
    for candidate in common:
        other = candidate.casefold()
        edits = _edit_distance(folded, other)
        ratio = difflib.SequenceMatcher(None, folded, other).ratio()
        if edits <= (2 if min(len(folded), len(other)) >= 8 else 1) or ratio >= TYPO_RATIO:
            score = (ratio - edits, candidate)
            if best is None or score > best:
                best = score
    return None if best is None else best[1]


def infer(seen: Observed) -> dict[str, Any]:
    """The datasheet's ``structure`` entry: ``{"detected": False, ...}`` unless most answers
    are JSON objects. Deterministic: keys, values and lines sorted."""
    json_answers = seen.answers - seen.not_json
    summary: dict[str, Any] = {
        "answers": seen.answers,
        "json_objects": json_answers,
        "detected": bool(seen.answers) and json_answers > MOST * seen.answers,
    }
    if not summary["detected"]:
        return summary
    presence, schema_keys, expected = _schema(seen, json_answers)
    fields, typos = _fields(seen, schema_keys, presence, expected)
    deviations: list[dict[str, Any]] = list(typos)
    counts: dict[str, int] = {"unknown_value": len(typos)}
    counts["not_json"] = seen.not_json
    deviations.extend({"line": line, "reason": "not_json"} for line in seen.not_json_lines)
    for shape, (count, lines) in seen.shapes.items():
        for reason in _shape_reasons(dict(shape), schema_keys, expected):
            counts[reason["reason"]] = counts.get(reason["reason"], 0) + count
            deviations.extend({"line": line, **reason} for line in lines)
    deviations.sort(key=lambda d: (d["line"], d["reason"], d.get("key", "")))
    summary.update(
        {
            "fields": fields,
            "deviations": {
                "by_reason": {reason: n for reason, n in sorted(counts.items()) if n},
                "shown": deviations[:SHOWN],
            },
            "complete": not seen.too_varied,
        }
    )
    return summary


def _schema(seen: Observed, json_answers: int) -> tuple[dict[str, int], list[str], dict[str, str]]:
    """How many answers have each key, the schema's keys (sorted: those at least half the
    JSON answers have), and the type each schema key mostly has."""
    presence: dict[str, int] = {}
    types: dict[str, dict[str, int]] = {}
    for shape, (count, _lines) in seen.shapes.items():
        for key, type_name in shape:
            presence[key] = presence.get(key, 0) + count
            per_type = types.setdefault(key, {})
            per_type[type_name] = per_type.get(type_name, 0) + count
    schema_keys = sorted(key for key, n in presence.items() if n * 2 >= json_answers)
    expected = {key: max(sorted(types[key]), key=lambda t: types[key][t]) for key in schema_keys}
    return presence, schema_keys, expected


def _fields(
    seen: Observed,
    schema_keys: list[str],
    presence: dict[str, int],
    expected: dict[str, str],
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The ``fields`` entry of each schema key (its type, presence and, for a
    low-cardinality field, its values) and the ``unknown_value`` deviations."""
    fields: dict[str, Any] = {}
    typos: list[dict[str, Any]] = []
    for key in schema_keys:
        entry: dict[str, Any] = {
            "type": expected[key],
            "present": presence[key],
        }
        tracked = seen.values.get(key)
        if tracked is not None and not tracked.overflow:
            of_type = {v: n for (t, v), n in tracked.counts.items() if t == expected[key]}
            used_twice = {v: n for v, n in of_type.items() if n >= 2}
            if (
                0 < len(used_twice) <= LOW_CARDINALITY
                and sum(used_twice.values()) * 2 >= (presence[key])
            ):
                entry["values"] = {
                    str(v): n for v, n in sorted(used_twice.items(), key=lambda i: str(i[0]))
                }
                typos.extend(_typos(key, expected[key], tracked, of_type, used_twice))
        fields[key] = entry
    return fields, typos


def _typos(
    key: str,
    expected_type: str,
    tracked: _Values,
    of_type: dict[Any, int],
    used_twice: dict[Any, int],
) -> list[dict[str, Any]]:
    """The ``unknown_value`` deviations of a low-cardinality key: string values used once
    that resemble a common value, in value order."""
    typos: list[dict[str, Any]] = []
    common = sorted(str(v) for v, n in used_twice.items() if n >= _COMMON)
    for value, n in sorted(of_type.items(), key=lambda i: str(i[0])):
        if n == 1 and isinstance(value, str):
            like = _resembles(value, common)
            if like is not None:
                line = tracked.first_line[(expected_type, value)]
                typos.append(
                    {
                        "line": line,
                        "reason": "unknown_value",
                        "key": key,
                        "value": value,
                        "resembles": like,
                    }
                )
    return typos


def _shape_reasons(
    keys: dict[str, str], schema_keys: list[str], expected: dict[str, str]
) -> list[dict[str, Any]]:
    """How answers with these keys (key -> type name) deviate from the schema:
    ``missing_key`` and ``wrong_type`` in schema order, then ``extra_key`` sorted."""
    reasons: list[dict[str, Any]] = []
    for key in schema_keys:
        if key not in keys:
            reasons.append({"reason": "missing_key", "key": key})
        elif keys[key] != expected[key] and not (
            expected[key] == "number" and keys[key] == "integer"
        ):
            reasons.append(
                {
                    "reason": "wrong_type",
                    "key": key,
                    "type": keys[key],
                    "expected": expected[key],
                }
            )
    reasons.extend(
        {"reason": "extra_key", "key": key} for key in sorted(keys) if key not in expected
    )
    return reasons
