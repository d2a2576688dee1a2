from __future__ import annotations

import json

import numpy as np
import pytest

from ingest import formats
from ingest.formats import FaultCode
from ingest.scanner import ScanSettings, scan_chunk
from tests.ingest.conftest import chat, varied_examples


def _lines() -> list[bytes]:
    """Every kind of line the batched chat path must hand back to the one-by-one path."""
    records: list = varied_examples(6, seed=5)
    records[1] = chat(
        ("system", "Be brief."),
        ("user", "Mail me at jane.doe@example.com"),
        ("assistant", "Noted, café ☕ at 10:30."),
    )
    records[2] = chat(("user", "Thanks!"), ("assistant", "ok" + " " * 40))
    records[4] = {"prompt": "q", "completion": "a mixed-in prompt/completion line"}
    lines = [json.dumps(record, ensure_ascii=False).encode() for record in records]
    lines[3:3] = [
        b"not json",
        b"",
        b'{"messages": [{"role": "user", "content": "q"}]}',
        b'{"messages": [{"role": "user", "content": "  "}, {"role": "assistant", "content": "a"}]}',
        b'{"messages": []}',
        b'{"messages": [{"role": "user", "role": "assistant", "content": "a repeated key"}]}',
        json.dumps(chat(("user", "x" * 3000), ("assistant", "too long"))).encode(),
    ]
    return lines


@pytest.mark.parametrize("action", ["allow", "block", "redact"])
def test_a_chunk_scans_as_its_lines_do_one_at_a_time(action: str) -> None:
    settings = ScanSettings(pii_action=action, max_line_bytes=2000)
    lines = _lines()
    whole = scan_chunk(b"\n".join(lines) + b"\n", 1, settings, formats.CHAT)
    alone = [
        scan_chunk(line + b"\n", number, settings, formats.CHAT)
        for number, line in enumerate(lines, start=1)
    ]
    for column in ("formats", "tokens", "exact", "signatures"):
        expected = np.concatenate([getattr(part, column) for part in alone])
        assert np.array_equal(getattr(whole, column), expected), column
    assert whole.faults == [fault for part in alone for fault in part.faults]
    assert whole.fault_count == sum(part.fault_count for part in alone)
    assert whole.short_answers.lines == [
        line for part in alone for line in part.short_answers.lines
    ]
    assert whole.roles == {
        role: sum(part.roles.get(role, 0) for part in alone) for role in whole.roles
    }
    assert whole.pii_lines["email"].lines == [2]
    shifted = {
        index + number - 1: line
        for number, part in enumerate(alone, start=1)
        for index, line in part.redacted_lines.items()
    }
    assert whole.redacted_lines == shifted


def test_refused_lines_carry_their_own_faults_in_line_order() -> None:
    result = scan_chunk(b"\n".join(_lines()) + b"\n", 1, ScanSettings(max_line_bytes=2000), "chat")
    assert [(fault.line, fault.code) for fault in result.faults] == [
        (4, FaultCode.INVALID_JSON),
        (5, FaultCode.BLANK_LINE),
        (6, FaultCode.NO_ASSISTANT_TURN),
        (7, FaultCode.EMPTY_CONTENT),
        (8, FaultCode.EMPTY_MESSAGES),
        (10, FaultCode.LINE_TOO_LONG),
    ]
    # a whitespace-padded answer is short however long its padding
    assert result.short_answers.lines == [3]
    assert result.formats[8] == formats.FORMAT_CODES[formats.CHAT]  # the repeated key
    assert result.formats[11] == formats.FORMAT_CODES[formats.PROMPT_COMPLETION]
