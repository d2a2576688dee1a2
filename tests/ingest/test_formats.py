from __future__ import annotations

import json

import pytest

from ingest import formats
from ingest.formats import FaultCode, decode_example, diagnose
from ingest.scanner import ScanSettings, scan_chunk

GOOD = [
    {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]},
    {
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "q"},
            {"role": "assistant", "content": "a", "weight": 0},
            {"role": "user", "content": "q2"},
            {"role": "assistant", "content": "a2", "weight": 1},
        ]
    },
    {"prompt": "2+2=", "completion": "4"},
]

BAD = {
    FaultCode.BOM: b'\xef\xbb\xbf{"prompt": "a", "completion": "b"}',
    FaultCode.INVALID_UTF8: b'{"prompt": "caf\xe9", "completion": "b"}',
    FaultCode.INVALID_JSON: b'{"prompt": "a", "completion": }',
    FaultCode.BLANK_LINE: b"   ",
    FaultCode.NOT_AN_OBJECT: b'["messages"]',
    FaultCode.UNKNOWN_FORMAT: b'{"text": "hello"}',
    FaultCode.UNKNOWN_KEY: b'{"messages": [{"role": "user", "content": "q"}, '
    b'{"role": "assistant", "content": "a", "name": "bot"}]}',
    FaultCode.MISSING_KEY: b'{"messages": [{"role": "user"}, '
    b'{"role": "assistant", "content": "a"}]}',
    FaultCode.WRONG_TYPE: b'{"messages": [{"role": "user", "content": 5}, '
    b'{"role": "assistant", "content": "a"}]}',
    FaultCode.INVALID_ROLE: b'{"messages": [{"role": "tool", "content": "q"}, '
    b'{"role": "assistant", "content": "a"}]}',
    FaultCode.EMPTY_CONTENT: b'{"messages": [{"role": "user", "content": "  "}, '
    b'{"role": "assistant", "content": "a"}]}',
    FaultCode.EMPTY_MESSAGES: b'{"messages": []}',
    FaultCode.NO_ASSISTANT_TURN: b'{"messages": [{"role": "user", "content": "q"}]}',
    FaultCode.WEIGHT_NOT_ALLOWED: b'{"messages": [{"role": "user", "content": "q", "weight": 1}, '
    b'{"role": "assistant", "content": "a"}]}',
    FaultCode.INVALID_WEIGHT: b'{"messages": [{"role": "user", "content": "q"}, '
    b'{"role": "assistant", "content": "a", "weight": 2}]}',
    FaultCode.INVALID_UNICODE: b'{"prompt": "a\\ud800", "completion": "c"}',
}


class TestDiagnose:
    @pytest.mark.parametrize("record", GOOD)
    def test_valid_lines_have_no_faults(self, record: dict) -> None:
        fmt, faults = diagnose(json.dumps(record).encode())
        assert faults == []
        assert fmt == (formats.CHAT if "messages" in record else formats.PROMPT_COMPLETION)

    @pytest.mark.parametrize(("code", "raw"), sorted(BAD.items()))
    def test_each_fault_is_named(self, code: str, raw: bytes) -> None:
        _, faults = diagnose(raw)
        assert code in [c for c, _ in faults]

    @pytest.mark.parametrize(
        "raw",
        [
            b'{"messages": [{"role": "assistant", "content": "a", "weight": null}]}',
            b'{"messages": [{"role": "assistant", "content": "a", "weight": true}]}',
            b'{"messages": [{"role": "assistant", "content": "a", "weight": 1.0}]}',
        ],
    )
    def test_weight_must_be_the_integer_0_or_1(self, raw: bytes) -> None:
        assert [c for c, _ in diagnose(raw)[1]] == [FaultCode.INVALID_WEIGHT]

    def test_messages_name_keys_but_not_values(self) -> None:
        raw = (
            b'{"messages": [{"role": "jane.doe@example.com", "content": "q"}, '
            b'{"role": "assistant", "content": "a", "jane.doe@example.com": 1}]}'
        )
        _, faults = diagnose(raw)
        text = " ".join(message for _, message in faults)
        assert "jane" not in text and "example.com" not in text
        assert {c for c, _ in faults} == {FaultCode.INVALID_ROLE, FaultCode.UNKNOWN_KEY}


class TestFastAndSlowPathsAgree:
    """The strict decoder may only accept what the rules accept, and vice versa."""

    @pytest.mark.parametrize("raw", [json.dumps(r).encode() for r in GOOD] + list(BAD.values()))
    def test_agreement(self, raw: bytes) -> None:
        result = scan_chunk(raw + b"\n", 1, ScanSettings(), formats.CHAT)
        slow_ok = diagnose(raw)[1] == []
        fast_ok = bool(result.formats[0])
        assert fast_ok == slow_ok
        if not fast_ok:
            assert result.faults, "a refused line must carry a fault"

    @pytest.mark.parametrize(
        "raw",
        [
            b'{"prompt": "a", "prompt": "b", "completion": "c"}',
            b'{"messages": [{"role": "user", "role": "assistant", "content": "a"}]}',
        ],
    )
    def test_a_repeated_key_keeps_its_last_value_in_both_paths(self, raw: bytes) -> None:
        result = scan_chunk(raw + b"\n", 1, ScanSettings(), formats.CHAT)
        assert result.formats[0] and result.fault_count == 0
        assert formats.parse(raw)[2] is not None

    def test_decoder_refuses_what_it_cannot_type(self) -> None:
        assert decode_example(BAD[FaultCode.UNKNOWN_KEY]) is None
        assert decode_example(json.dumps(GOOD[2]).encode()) is not None
