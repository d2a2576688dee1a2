"""Canonical JSON bytes for audit bodies (RFC 8785 / JCS, restricted to what audit needs).

Output rules, which match RFC 8785 for every value this encoder accepts:

- objects: members sorted by their keys as UTF-16 code units (RFC 8785 section 3.2.3),
  no whitespace anywhere, ``:`` and ``,`` as the only separators;
- strings: UTF-8; only ``"``, ``\\`` and U+0000..U+001F are escaped, as ``\\b \\t \\n
  \\f \\r`` or ``\\u00xx`` (lower-case hex); everything else, non-ASCII included, is
  written as itself. A lone surrogate cannot be UTF-8 and is refused;
- ``true``, ``false``, ``null``; integers in decimal.

Numbers, the decision: **floats are refused**, every float (NaN and infinities among
them), and integers must lie within +-(2**53 - 1), the range every JSON reader holds
exactly (I-JSON, RFC 7493). RFC 8785 would print floats the way ECMAScript does, which
Python's ``repr`` does not match (``1e+16`` vs ``1e16``, ``5e-07`` vs ``5e-7``); an
audit record needs no fractions, so callers pass ints or strings (a ratio as
``"0.25"``, a duration in milliseconds). Refused too: bytes (hex or base64 them
first), sets, dates (pass RFC 3339 strings), non-string keys, and anything else that
JSON does not have. Refusals raise :class:`CanonicalEncodingError`.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from json.encoder import encode_basestring as _quote  # C: escapes exactly as above

MAX_SAFE_INTEGER = 2**53 - 1
MAX_DEPTH = 32


class CanonicalEncodingError(ValueError):
    """The value has no canonical JSON form here (float, bytes, lone surrogate, ...)."""


def canonical_json(value: object) -> bytes:
    """The canonical JSON bytes of ``value`` (see the module docstring)."""
    parts: list[str] = []
    _encode(value, parts.append, 0)
    try:
        return "".join(parts).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise CanonicalEncodingError(
            f"string is not valid Unicode (lone surrogate): {exc}"
        ) from None


def quote(text: str) -> str:
    """A JSON string literal for ``text``, as canonical_json writes it."""
    return _quote(text)


def _utf16_order(key: str) -> bytes:
    try:
        return key.encode("utf-16-be")
    except UnicodeEncodeError:
        raise CanonicalEncodingError(f"key {key!r} is not valid Unicode") from None


def _encode(value: object, out, depth: int) -> None:
    if value is None:
        out("null")
    elif value is True:
        out("true")
    elif value is False:
        out("false")
    elif isinstance(value, str):
        out(_quote(value))
    elif isinstance(value, int):
        if not -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
            raise CanonicalEncodingError(f"integer {value} is outside +-(2**53 - 1)")
        out(int.__repr__(value))  # an IntEnum prints its name through str()
    elif isinstance(value, float):
        raise CanonicalEncodingError(
            f"floats are not accepted ({value!r}); pass an int or a string"
        )
    elif isinstance(value, dict):
        if depth >= MAX_DEPTH:
            raise CanonicalEncodingError(f"nested deeper than {MAX_DEPTH}")
        for key in value:
            if not isinstance(key, str):
                raise CanonicalEncodingError(f"object key {key!r} is not a string")
        out("{")
        first = True
        for key in sorted(value, key=_utf16_order):
            if not first:
                out(",")
            first = False
            out(_quote(key))
            out(":")
            _encode(value[key], out, depth + 1)
        out("}")
    elif isinstance(value, list | tuple):
        if depth >= MAX_DEPTH:
            raise CanonicalEncodingError(f"nested deeper than {MAX_DEPTH}")
        out("[")
        for index, item in enumerate(value):
            if index:
                out(",")
            _encode(item, out, depth + 1)
        out("]")
    else:
        raise CanonicalEncodingError(
            f"{type(value).__name__} has no JSON form here; pass str, int, bool, None, list or dict"
        )


# --- timestamps -------------------------------------------------------------------------

TS_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
TS_LENGTH = len("2026-01-01T00:00:00.000000Z")


def format_ts(moment: datetime) -> str:
    """RFC 3339, UTC, microseconds, ``Z``: fixed width, so text order is time order."""
    if moment.tzinfo is None:
        raise ValueError("timestamp must be timezone-aware")
    return moment.astimezone(UTC).strftime(TS_FORMAT)


def now_ts() -> str:
    return datetime.now(UTC).strftime(TS_FORMAT)


def normalize_ts(value: str | datetime) -> str:
    """Any RFC 3339 time (``2026-01-01T10:00:00+02:00``, ``...Z``, fractions or not) or an
    aware datetime, as the fixed-width UTC form stored in ``ts``."""
    if isinstance(value, datetime):
        return format_ts(value)
    if not isinstance(value, str) or "T" not in value.upper():
        raise ValueError(f"not an RFC 3339 date-time: {value!r}")
    try:
        parsed = datetime.fromisoformat(value.replace("z", "Z"))
    except ValueError:
        raise ValueError(f"not an RFC 3339 date-time: {value!r}") from None
    if parsed.tzinfo is None:
        raise ValueError(f"RFC 3339 date-time needs Z or an offset: {value!r}")
    try:
        return format_ts(parsed)
    except OverflowError:
        raise ValueError(f"date-time out of range: {value!r}") from None


# The exact shape, in ASCII digits; fromisoformat then refuses impossible dates. (strptime
# did both in one call at ten times the cost, and every audit event is checked twice.)
_CANONICAL_TS = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z")


def is_canonical_ts(value: object) -> bool:
    if not isinstance(value, str) or _CANONICAL_TS.fullmatch(value) is None:
        return False
    try:
        datetime.fromisoformat(value[:-1])
    except ValueError:
        return False
    return True
