from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from ingest import (
    FileTooLarge,
    IngestLimits,
    IngestSession,
    InsufficientStorage,
    ScanPool,
    content_path,
    fingerprint_path,
    ingest,
)
from ingest.formats import FaultCode
from ingest.pii import RECOGNISER_SET_VERSION
from tests.ingest.conftest import chat, jsonl, stored_names, varied_examples

PII_VALUES = [
    "jane.doe@example.com",
    "+1 (415) 555-2671",
    "4111 1111 1111 1111",
    "DE89 3704 0044 0532 0130 00",
    "123-45-6789",
    "AKIAIOSFODNN7EXAMPLE",
]


def with_pii() -> bytes:
    records = varied_examples(20)
    records[3] = chat(
        ("user", f"Write to {PII_VALUES[0]} or call {PII_VALUES[1]}"), ("assistant", "Noted.")
    )
    records[7] = chat(
        ("user", "Here are my details."),
        (
            "assistant",
            f"Card {PII_VALUES[2]}, IBAN {PII_VALUES[3]}, "
            f"SSN {PII_VALUES[4]}, key {PII_VALUES[5]}.",
        ),
    )
    return jsonl(*records)


class TestStoring:
    def test_stored_under_its_sha256_with_a_fingerprint(self, run_ingest, store: Path) -> None:
        import hashlib

        data = jsonl(*varied_examples(30))
        result = run_ingest(data)
        assert result.status == "processed" and result.status_details is None
        assert result.sha256 == hashlib.sha256(data).hexdigest()
        assert result.stored is not None
        assert result.stored.path == content_path(store, result.sha256)
        assert result.stored.path.read_bytes() == data
        assert result.stored.fingerprint == fingerprint_path(result.stored.path)
        assert stored_names(store) == {result.sha256, result.sha256 + ".fingerprint"}

    def test_same_bytes_twice_is_the_same_file(self, run_ingest, store: Path) -> None:
        data = jsonl(*varied_examples(5))
        first, second = run_ingest(data), run_ingest(data)
        assert first.sha256 == second.sha256
        assert len(stored_names(store)) == 2

    def test_line_numbers_survive_chunking(self, run_ingest) -> None:
        records = varied_examples(300)
        records[250] = {"messages": [{"role": "user", "content": "q"}]}
        small = IngestLimits(chunk_bytes=4096, max_line_bytes=4096)
        result = run_ingest(jsonl(*records), limits=small)
        assert [(f.line, f.code) for f in result.report.faults] == [
            (251, FaultCode.NO_ASSISTANT_TURN)
        ]
        assert result.report.lines == 300 and result.report.examples == 299

    def test_last_line_without_newline_counts(self, run_ingest) -> None:
        data = jsonl(*varied_examples(3)).rstrip(b"\n")
        assert run_ingest(data).report.examples == 3

    def test_crlf_line_endings_are_accepted(self, run_ingest) -> None:
        data = jsonl(*varied_examples(3)).replace(b"\n", b"\r\n")
        assert run_ingest(data).report.examples == 3


class TestBadFiles:
    @pytest.mark.parametrize(
        ("line", "code"),
        [
            (b"not json", FaultCode.INVALID_JSON),
            (b'\xef\xbb\xbf{"prompt": "a", "completion": "b"}', FaultCode.BOM),
            (b'{"prompt": "\xff", "completion": "b"}', FaultCode.INVALID_UTF8),
            (b'{"messages": [{"role": "user", "content": "q"}]}', FaultCode.NO_ASSISTANT_TURN),
            (
                b'{"messages": [{"role": "user", "content": ""}, '
                b'{"role": "assistant", "content": "a"}]}',
                FaultCode.EMPTY_CONTENT,
            ),
            (
                b'{"messages": [{"role": "user", "content": "q", "extra": 1}, '
                b'{"role": "assistant", "content": "a"}]}',
                FaultCode.UNKNOWN_KEY,
            ),
            (
                b'{"messages": [{"content": "q"}, {"role": "assistant", "content": "a"}]}',
                FaultCode.MISSING_KEY,
            ),
            (b"", FaultCode.BLANK_LINE),
        ],
    )
    def test_fault_named_with_its_line_and_nothing_stored(
        self, run_ingest, store: Path, line: bytes, code: str
    ) -> None:
        records: list = varied_examples(4)
        data = jsonl(*records[:2], line, *records[2:])
        result = run_ingest(data)
        assert result.status == "error"
        assert [(f.line, f.code) for f in result.report.faults] == [(3, code)]
        assert result.stored is None
        assert stored_names(store) == set()
        assert "first at line 3" in (result.status_details or "")

    def test_line_over_the_limit(self, run_ingest) -> None:
        long = chat(("user", "x" * 5000), ("assistant", "y"))
        result = run_ingest(
            jsonl(*varied_examples(2), long, *varied_examples(1)),
            limits=IngestLimits(max_line_bytes=2048, chunk_bytes=1024),
        )
        assert [(f.line, f.code) for f in result.report.faults] == [(3, FaultCode.LINE_TOO_LONG)]
        assert result.report.lines == 4 and result.report.examples == 3

    def test_over_long_line_inside_a_chunk(self, run_ingest) -> None:
        long = chat(("user", "x" * 3000), ("assistant", "y"))
        result = run_ingest(
            jsonl(*varied_examples(2), long), limits=IngestLimits(max_line_bytes=2048)
        )
        assert [(f.line, f.code) for f in result.report.faults] == [(3, FaultCode.LINE_TOO_LONG)]

    def test_first_100_faults_then_a_count(self, run_ingest) -> None:
        result = run_ingest(jsonl(*varied_examples(1), *(["nope"] * 250)))
        report = result.report
        assert report.fault_count == 250 and len(report.faults) == 100
        assert [f.line for f in report.faults] == list(range(2, 102))

    def test_mixed_formats_are_refused(self, run_ingest) -> None:
        data = jsonl(*varied_examples(2), {"prompt": "p", "completion": "c"})
        result = run_ingest(data)
        assert result.report.format == "chat"
        assert [(f.line, f.code) for f in result.report.faults] == [(3, FaultCode.MIXED_FORMAT)]

    def test_prompt_completion_files(self, run_ingest) -> None:
        data = jsonl(*({"prompt": f"q{i}?", "completion": f"answer number {i}"} for i in range(5)))
        result = run_ingest(data)
        assert result.status == "processed" and result.report.format == "prompt_completion"

    def test_empty_file(self, run_ingest) -> None:
        result = run_ingest(b"")
        assert result.status == "error"
        assert [(f.line, f.code) for f in result.report.faults] == [(0, FaultCode.NO_EXAMPLES)]

    def test_keep_rejected_stores_the_bad_file(self, run_ingest, store: Path) -> None:
        result = run_ingest(jsonl("nope"), keep_rejected=True)
        assert result.status == "error" and result.stored is not None
        assert result.stored.path.exists()


class TestLimits:
    def test_declared_size_over_the_limit_is_refused_before_reading(self, store: Path) -> None:
        with pytest.raises(FileTooLarge) as caught:
            IngestSession(
                dest_dir=store,
                pii_action="allow",
                limits=IngestLimits(max_bytes=1000),
                declared_size=2 << 30,
            )
        assert caught.value.code == "file_too_large"
        assert stored_names(store) == set()

    def test_stream_over_the_limit_stops_before_writing_past_it(self, store: Path) -> None:
        class Endless(io.RawIOBase):
            """A 2 GiB upload that is never materialised: each read makes a block."""

            def __init__(self) -> None:
                self.served = 0

            def readable(self) -> bool:
                return True

            def read(self, size: int = -1) -> bytes:
                if self.served >= 2 << 30:
                    return b""
                self.served += size
                return (b'{"prompt": "p", "completion": "c"}\n' * (size // 35 + 1))[:size]

        source = Endless()
        with pytest.raises(FileTooLarge) as caught:
            ingest(
                source,
                dest_dir=store,
                pii_action="allow",
                limits=IngestLimits(max_bytes=2 << 20),
                read_bytes=1 << 20,
            )
        assert source.served <= (2 << 20) + (1 << 20)
        assert caught.value.details["limit"] == 2 << 20
        assert stored_names(store) == set()

    def test_refused_when_the_store_would_run_out_of_space(self, store: Path) -> None:
        with pytest.raises(InsufficientStorage) as caught:
            ingest(
                io.BytesIO(jsonl(*varied_examples(2))),
                dest_dir=store,
                pii_action="allow",
                limits=IngestLimits(min_free_bytes=1 << 62),
            )
        assert caught.value.code == "insufficient_storage"
        assert stored_names(store) == set()

    def test_an_error_mid_stream_leaves_nothing(self, store: Path) -> None:
        with (
            pytest.raises(RuntimeError),
            IngestSession(dest_dir=store, pii_action="redact") as session,
        ):
            session.feed(jsonl(*varied_examples(3)))
            raise RuntimeError("client went away")
        assert stored_names(store) == set()


class TestPii:
    def test_allow_records_findings_by_type_with_line_numbers(self, run_ingest) -> None:
        result = run_ingest(with_pii(), pii_action="allow")
        assert result.status == "processed"
        pii = result.report.to_dict()["pii"]
        assert pii["recogniser_set"] == RECOGNISER_SET_VERSION
        assert pii["lines"] == 2 and pii["findings"] == 6
        assert pii["by_type"]["email"]["line_numbers"] == [4]
        assert pii["by_type"]["payment_card"]["line_numbers"] == [8]
        assert set(pii["by_type"]) == {
            "email",
            "phone",
            "payment_card",
            "iban",
            "us_ssn",
            "aws_access_key",
        }

    def test_block_refuses_with_line_numbers(self, run_ingest, store: Path) -> None:
        result = run_ingest(with_pii(), pii_action="block")
        assert result.status == "error" and result.stored is None
        assert [(f.line, f.code) for f in result.report.faults] == [
            (4, FaultCode.PII_FOUND),
            (8, FaultCode.PII_FOUND),
        ]
        assert stored_names(store) == set()

    def test_redact_stores_a_derived_file_with_lineage(self, run_ingest, store: Path) -> None:
        import hashlib

        result = run_ingest(with_pii(), pii_action="redact")
        assert result.status == "processed"
        assert result.redacted is not None and result.lineage is not None
        derived = result.redacted.path.read_bytes()
        assert result.redacted.path == content_path(store, hashlib.sha256(derived).hexdigest())
        assert result.lineage.input_sha256 == result.sha256
        assert result.lineage.output_sha256 == result.redacted.sha256
        assert result.lineage.recogniser_set == RECOGNISER_SET_VERSION
        assert result.lineage.redacted_lines == 2
        lines = derived.decode().splitlines()
        assert len(lines) == 20
        records = [json.loads(line) for line in lines]
        assert records[3]["messages"][0]["content"] == "Write to [EMAIL] or call [PHONE]"
        assert "[PAYMENT_CARD]" in records[7]["messages"][1]["content"]
        original = with_pii().decode().splitlines()
        assert [lines[i] for i in (0, 1, 19)] == [original[i] for i in (0, 1, 19)]
        assert result.redacted.fingerprint.exists()

    def test_redact_without_findings_stores_only_the_file(self, run_ingest, store: Path) -> None:
        result = run_ingest(jsonl(*varied_examples(5)), pii_action="redact")
        assert result.redacted is None and result.lineage is None
        assert len(stored_names(store)) == 2

    @pytest.mark.parametrize("action", ["allow", "block", "redact"])
    def test_values_never_reach_reports_errors_or_logs(self, run_ingest, action: str) -> None:
        bad_line = b'{"messages": [{"role": "jane.doe@example.com", "content": "x"}]}'
        with capture_logs() as logs:
            result = run_ingest(with_pii() + bad_line + b"\n", pii_action=action)
        exposed = json.dumps(
            [
                result.report.to_dict(),
                result.status_details,
                result.lineage.to_dict() if result.lineage else None,
                logs,
            ],
            default=str,
        )
        for value in PII_VALUES + ["jane.doe"]:
            assert value not in exposed
        assert any(event["event"] == "dataset.ingested" for event in logs)


class TestWorkerPool:
    def test_a_pool_gives_the_same_result_as_in_process(self, tmp_path: Path) -> None:
        data = with_pii() + jsonl(*varied_examples(400, seed=3), "oops")
        limits = IngestLimits(chunk_bytes=8192)
        alone = ingest(
            io.BytesIO(data), dest_dir=tmp_path / "a", pii_action="redact", limits=limits
        )
        with ScanPool(2) as pool:
            pooled = ingest(
                io.BytesIO(data),
                dest_dir=tmp_path / "b",
                pii_action="redact",
                limits=limits,
                pool=pool,
                keep_rejected=True,
            )
        assert pooled.report.to_dict() == alone.report.to_dict()
        assert pooled.report.faults[0].line == 421
