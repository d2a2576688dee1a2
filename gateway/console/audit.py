"""The audit pages' input: filters checked one by one, so each error shows beside its field."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

from audit.encoding import normalize_ts

FILTER_FIELDS = (
    ("actor", "Actor"),
    ("action", "Action"),
    ("resource", "Object"),
    ("since", "From (RFC 3339)"),
    ("until", "Until (RFC 3339)"),
)
DECISIONS = ("allow", "deny", "error")
MAX_FILTER = 512
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
PAGE = 50


def parse_filters(params: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """The filters a query string asks for, and an error per field that is not acceptable."""
    filters: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for name, _label in FILTER_FIELDS:
        value = (params.get(name) or "").strip()
        if not value:
            continue
        if len(value) > MAX_FILTER or _CONTROL.search(value):
            errors[name] = f"at most {MAX_FILTER} printable characters"
            continue
        if name in {"since", "until"}:
            try:
                normalize_ts(value)
            except ValueError:
                errors[name] = "a time such as 2026-12-01T00:00:00Z"
                continue
        filters[name] = value
    decision = params.get("decision") or ""
    if decision:
        if decision in DECISIONS:
            filters["decision"] = decision
        else:
            errors["decision"] = "allow, deny or error"
    return filters, errors


def parse_after(value: str | None) -> int:
    if value and value.isdigit() and len(value) <= 16:
        return int(value)
    return 0


def next_href(filters: Mapping[str, Any], next_after: int | None) -> str | None:
    if next_after is None:
        return None
    return "/console/audit?" + urlencode({**filters, "after": next_after})
