"""The preference (DPO) format: validation with line numbers, and PII, dedup, overlap and the
datasheet over all three parts of an example."""

from __future__ import annotations

import json
import random

import pytest

from ingest import formats, overlap_gate
from ingest.formats import FaultCode, diagnose
from ingest.scanner import ScanSettings, scan_chunk
from tests.ingest.conftest import jsonl

_TEXT = (
    "order refund shipping account invoice update release build test cluster node latency "
    "memory budget contract vendor schedule meeting report customer ticket priority feature"
)
_WORDS = _TEXT.split()


def pair(prompt: str, preferred: str, non_preferred: str, *, system: str | None = None) -> dict:
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": prompt})
    return {
        "input": {"messages": messages},
        "preferred_output": [{"role": "assistant", "content": preferred}],
        "non_preferred_output": [{"role": "assistant", "content": non_preferred}],
    }


def varied_pairs(count: int, *, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)

    def words(low: int, high: int) -> str:
        return " ".join(rng.choice(_WORDS) for _ in range(rng.randint(low, high)))

    return [
        pair(f"Question {i}: {words(8, 20)}?", words(20, 50), words(20, 50), system="Be brief.")
        for i in range(count)
    ]


GOOD = pair("Where is my order?", "It ships tomorrow.", "No idea, sorry.")


def _with(**changes) -> bytes:
    record = json.loads(json.dumps(GOOD))
    for path, value in changes.items():
        target = record
        *parents, last = path.split("__")
        for key in parents:
            target = target[int(key)] if key.isdigit() else target[key]
        target[last] = value
    return json.dumps(record).encode()


BAD = {
    FaultCode.MISSING_KEY: json.dumps({k: v for k, v in GOOD.items() if k != "input"}).encode(),
    FaultCode.INVALID_OUTPUT: _with(preferred_output=[]),
    FaultCode.INVALID_ROLE: _with(non_preferred_output=[{"role": "user", "content": "x"}]),
    FaultCode.WEIGHT_NOT_ALLOWED: _with(
        preferred_output=[{"role": "assistant", "content": "a", "weight": 1}]
    ),
    FaultCode.EMPTY_CONTENT: _with(non_preferred_output=[{"role": "assistant", "content": " "}]),
    FaultCode.EMPTY_MESSAGES: _with(input={"messages": []}),
    FaultCode.UNKNOWN_KEY: _with(input={"messages": GOOD["input"]["messages"], "tools": []}),
    FaultCode.IDENTICAL_OUTPUTS: _with(
        non_preferred_output=[{"role": "assistant", "content": "It ships tomorrow."}]
    ),
}


class TestValidation:
    def test_a_good_line_is_a_preference_example(self, run_ingest) -> None:
        result = run_ingest(jsonl(*varied_pairs(5)))
        assert result.status == "processed"
        assert result.report.format == formats.PREFERENCE and result.report.examples == 5
        assert result.report.roles == {"system": 5, "user": 5, "assistant": 10}

    @pytest.mark.parametrize("code", list(BAD))
    def test_each_fault_is_named_and_both_paths_agree(self, code: str) -> None:
        assert code in {c for c, _ in diagnose(BAD[code])[1]}
        scanned = scan_chunk(BAD[code] + b"\n", 1, ScanSettings(), formats.PREFERENCE)
        assert not scanned.formats[0] and code in {f.code for f in scanned.faults}

    def test_faults_carry_line_numbers(self, run_ingest) -> None:
        lines = [*varied_pairs(6, seed=1)]
        lines[2] = BAD[FaultCode.INVALID_OUTPUT].decode()
        lines[4] = json.dumps(varied_pairs(1, seed=9)[0]["input"])  # a chat line, no answer
        result = run_ingest(jsonl(*lines))
        assert result.status == "error"
        assert [(f.line, f.code) for f in result.report.faults] == [
            (3, FaultCode.INVALID_OUTPUT),
            (5, FaultCode.NO_ASSISTANT_TURN),
        ]

    def test_a_chat_line_in_a_preference_file_is_mixed(self, run_ingest) -> None:
        chat = {
            "messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
        }
        result = run_ingest(jsonl(GOOD, chat))
        assert [(f.line, f.code) for f in result.report.faults] == [(2, FaultCode.MIXED_FORMAT)]


class TestAllThreeParts:
    @pytest.mark.parametrize("part", ["input", "preferred", "non_preferred"])
    def test_pii_is_found_and_redacted_in_every_part(self, run_ingest, part: str) -> None:
        leak = "write to jane.doe@example.com"
        texts = {"input": "Where is it?", "preferred": "Tomorrow.", "non_preferred": "No idea."}
        texts[part] += " " + leak
        pairs = [
            *varied_pairs(3, seed=2),
            pair(texts["input"], texts["preferred"], texts["non_preferred"]),
        ]
        blocked = run_ingest(jsonl(*pairs), pii_action="block")
        assert [(f.line, f.code) for f in blocked.report.faults] == [(4, FaultCode.PII_FOUND)]
        redacted = run_ingest(jsonl(*pairs), pii_action="redact")
        assert redacted.status == "processed" and redacted.redacted is not None
        line = json.loads(redacted.redacted.path.read_bytes().decode().splitlines()[3])
        assert "jane.doe" not in json.dumps(line) and "[EMAIL]" in json.dumps(line)
        assert formats.diagnose(json.dumps(line).encode()) == (formats.PREFERENCE, [])

    def test_duplicates_count_every_part(self, run_ingest) -> None:
        pairs = varied_pairs(8, seed=3)
        same_prompt = json.loads(json.dumps(pairs[0]))
        same_prompt["non_preferred_output"][0]["content"] = "something else entirely here"
        result = run_ingest(jsonl(*pairs, pairs[1], same_prompt)).report
        assert [p["line"] for p in result.exact_duplicates.to_dict()["pairs"]] == [9]

    def test_overlap_gate_reads_preference_fingerprints(self, run_ingest) -> None:
        pairs = varied_pairs(40, seed=4)
        training = run_ingest(jsonl(*pairs[:30]))
        leaky = run_ingest(jsonl(*pairs[30:35], pairs[3]))
        assert training.stored and leaky.stored
        refused = overlap_gate(
            training_fingerprint=training.stored.fingerprint,
            validation_fingerprint=leaky.stored.fingerprint,
        )
        assert not refused.passed and [p["line"] for p in refused.details["exact"]["pairs"]] == [6]
