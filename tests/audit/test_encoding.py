from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta, timezone

import pytest

from audit.encoding import (
    CanonicalEncodingError,
    canonical_json,
    is_canonical_ts,
    normalize_ts,
)


class TestCanonicalJson:
    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            (None, b"null"),
            (True, b"true"),
            (False, b"false"),
            (0, b"0"),
            (-17, b"-17"),
            (2**53 - 1, b"9007199254740991"),
            ("", b'""'),
            ([], b"[]"),
            ({}, b"{}"),
            ({"b": 1, "a": [1, "x", None]}, b'{"a":[1,"x",null],"b":1}'),
            ({"z": {"y": {}, "x": []}}, b'{"z":{"x":[],"y":{}}}'),
            ((1, 2), b"[1,2]"),
            # RFC 8785 3.2.2.2: only " \ and U+0000..U+001F are escaped; \u00xx lower-case.
            (
                "\u20ac$\u000f\u000aA'\u0042\u0022\u005c\\\"/",
                b'"\xe2\x82\xac$\\u000f\\nA\'B\\"\\\\\\\\\\"/"',
            ),
            ("\b\t\n\f\r\x00\x1f\x7f", b'"\\b\\t\\n\\f\\r\\u0000\\u001f\x7f"'),
            ("\u00e9\U0001f600<>&", b'"\xc3\xa9\xf0\x9f\x98\x80<>&"'),
        ],
    )
    def test_fixed_vectors(self, value, expected):
        assert canonical_json(value) == expected

    def test_rfc8785_literals_and_string_sample(self):
        value = {
            "string": "\u20ac$\u000f\u000aA'\u0042\u0022\u005c\\\"/",
            "literals": [None, True, False],
        }
        assert canonical_json(value) == (
            b'{"literals":[null,true,false],"string":"\xe2\x82\xac$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}'
        )

    def test_keys_sort_by_utf16_code_units(self):
        # RFC 8785 section 3.2.3: U+1F600 (surrogates D83D DE00) sorts before U+FB33.
        value = {
            "\u20ac": "Euro Sign",
            "\r": "Carriage Return",
            "\ufb33": "Hebrew Letter Dalet With Dagesh",
            "1": "One",
            "\U0001f600": "Emoji: Grinning Face",
            "\u0080": "Control",
            "\u00f6": "Latin Small Letter O With Diaeresis",
        }
        order = list(json.loads(canonical_json(value)).values())
        assert order == [
            "Carriage Return",
            "One",
            "Control",
            "Latin Small Letter O With Diaeresis",
            "Euro Sign",
            "Emoji: Grinning Face",
            "Hebrew Letter Dalet With Dagesh",
        ]

    def test_round_trips_through_json(self):
        value = {"k\u00e9y": ["\u2028", {"n": -3, "t": True}], "": None}
        assert json.loads(canonical_json(value)) == value

    @pytest.mark.parametrize(
        "value",
        [
            1.5,
            0.0,
            math.nan,
            math.inf,
            -math.inf,
            b"bytes",
            bytearray(b"x"),
            {1, 2},
            {1: "int key"},
            2**53,
            -(2**53),
            "lone \ud800 surrogate",
            {"lone \udfff key": 1},
            datetime(2026, 1, 1, tzinfo=UTC),
            object(),
            {"nested": [{"deep": math.nan}]},
        ],
    )
    def test_refuses_what_has_no_canonical_form(self, value):
        with pytest.raises(CanonicalEncodingError):
            canonical_json(value)

    def test_refuses_deep_nesting(self):
        value: list = []
        for _ in range(40):
            value = [value]
        with pytest.raises(CanonicalEncodingError, match="nested"):
            canonical_json(value)


class TestTimestamps:
    def test_normalizes_rfc3339_forms_to_fixed_width_utc(self):
        assert normalize_ts("2026-01-01T10:00:00+02:00") == "2026-01-01T08:00:00.000000Z"
        assert normalize_ts("2026-01-01T10:00:00Z") == "2026-01-01T10:00:00.000000Z"
        assert normalize_ts("2026-01-01t10:00:00.5z") == "2026-01-01T10:00:00.500000Z"
        aware = datetime(2026, 1, 1, 1, tzinfo=timezone(timedelta(hours=1)))
        assert normalize_ts(aware) == "2026-01-01T00:00:00.000000Z"

    @pytest.mark.parametrize("bad", ["2026-01-01", "2026-01-01T10:00:00", "yesterday", 5])
    def test_refuses_dates_without_time_or_zone(self, bad):
        with pytest.raises(ValueError):
            normalize_ts(bad)

    def test_canonical_ts(self):
        assert is_canonical_ts("2026-11-28T12:00:00.000001Z")
        assert not is_canonical_ts("2026-11-28T12:00:00Z")
        assert not is_canonical_ts("2026-11-28T12:00:00.000001+00:00")
        assert not is_canonical_ts("2026-13-28T12:00:00.000001Z")
        assert not is_canonical_ts("2026-02-30T12:00:00.000001Z")
        assert not is_canonical_ts("2026-11-28T24:00:00.000001Z")
        assert not is_canonical_ts("2026-11-28T12:00:60.000001Z")
        assert not is_canonical_ts("2026-11-28t12:00:00.000001Z")
        assert not is_canonical_ts("2026-11-28T12:00:00.000001z")
        assert not is_canonical_ts("2026-11-28T12:00:00.000001Z\n")
        assert not is_canonical_ts("\u0662026-11-28T12:00:00.000001Z")  # Arabic-Indic digit
        assert not is_canonical_ts(None)
