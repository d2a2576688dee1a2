from __future__ import annotations

import math

import pytest

from audit.encoding import canonical_json
from audit.event import (
    MAX_DETAILS_BYTES,
    InvalidEventError,
    check_event,
    encode_details,
    event_body,
)

BASE = {
    "seq": 7,
    "ts": "2026-11-28T12:00:00.000001Z",
    "actor": "alice",
    "tenant": "acme",
    "action": "policy.check",
    "resource": "ds:42",
    "decision": "deny",
    "policy_version": "0af3",
}


def body_of(details=None, **changes) -> bytes:
    fields = {**BASE, **changes}
    return event_body(**fields, details_json=encode_details(details))


class TestBody:
    def test_fixed_vector(self):
        assert body_of({"reason": "no rule"}) == (
            b'{"action":"policy.check","actor":"alice","decision":"deny",'
            b'"details":{"reason":"no rule"},"policy_version":"0af3","resource":"ds:42",'
            b'"seq":7,"tenant":"acme","ts":"2026-11-28T12:00:00.000001Z","v":1}'
        )

    @pytest.mark.parametrize(
        "changes",
        [
            {},
            {"policy_version": None},
            {"actor": 'quote"and\\backslash', "resource": "tab\there"},
            {"actor": "\u00e9\u4e2d\U0001f600", "tenant": "\u2028"},
            {"details": {"z": [1, {"b": None, "a": True}], "\u00e9": "x", "A": -5}},
        ],
    )
    def test_is_the_canonical_json_of_the_whole_event(self, changes):
        details = changes.pop("details", {"k": "v"})
        event = {**BASE, **changes, "details": details, "v": 1}
        assert body_of(details, **changes) == canonical_json(event)

    def test_no_details_is_an_empty_object(self):
        assert b'"details":{}' in body_of(None)


class TestRefusals:
    @pytest.mark.parametrize(
        "details",
        [
            {"ratio": 0.5},
            {"x": math.nan},
            {"x": math.inf},
            {"x": b"raw bytes"},
            {"x": {1, 2}},
            {1: "int key"},
            ["not", "a", "dict"],
            {"x": 2**60},
        ],
    )
    def test_details_that_are_not_json_safe(self, details):
        with pytest.raises(InvalidEventError):
            encode_details(details)

    @pytest.mark.parametrize(
        "details",
        [
            {"password": "x"},
            {"Authorization": "Bearer x"},
            {"nested": {"email": "a@b.c"}},
            {"files": [{"content": "..."}]},
            {"token": "x"},
        ],
    )
    def test_details_that_name_secrets_or_contents(self, details):
        with pytest.raises(InvalidEventError, match="never secrets or contents"):
            encode_details(details)

    def test_details_too_large_for_ids(self):
        with pytest.raises(InvalidEventError, match=f"at most {MAX_DETAILS_BYTES}"):
            encode_details({"blob": "x" * MAX_DETAILS_BYTES})

    @pytest.mark.parametrize(
        "changes",
        [
            {"actor": ""},
            {"actor": "a" * 257},
            {"tenant": None},
            {"decision": "x" * 17},
            {"resource": 5},
            {"policy_version": "p" * 65},
            {"ts": "2026-11-28T12:00:00Z"},
            {"ts": "2026-11-28 12:00:00.000000Z"},
        ],
    )
    def test_fields(self, changes):
        fields = {**BASE, **changes}
        fields.pop("seq")
        with pytest.raises(InvalidEventError):
            check_event(**fields)

    def test_lone_surrogate_in_a_field(self):
        with pytest.raises(InvalidEventError, match="Unicode"):
            body_of(None, actor="bad \ud800")
