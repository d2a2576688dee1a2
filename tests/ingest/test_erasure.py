from __future__ import annotations

import json
from pathlib import Path

import pytest

from ingest import find_subject_lines
from tests.ingest.conftest import chat, varied_examples


def write(path: Path, records: list[dict], ensure_ascii: bool = False) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=ensure_ascii) + "\n" for r in records))
    return path


class TestFindSubjectLines:
    @pytest.mark.parametrize("ensure_ascii", [False, True])
    def test_line_numbers_of_every_mention(self, tmp_path: Path, ensure_ascii: bool) -> None:
        records = varied_examples(50)
        records[4] = chat(("user", "I am Zoë, zoe.muller@example.com"), ("assistant", "Hi."))
        records[30] = chat(("user", "hello"), ("assistant", "Mail ZOE.MULLER@EXAMPLE.COM"))
        records[31] = chat(("user", "other zoe.muller@example.org"), ("assistant", "ok"))
        path = write(tmp_path / "f.jsonl", records, ensure_ascii)
        assert find_subject_lines(path, "Zoe.Muller@example.com").lines == [5, 31]

    def test_non_ascii_identifier_in_escaped_files(self, tmp_path: Path) -> None:
        records = varied_examples(5)
        records[2] = chat(("user", "contact zoë.müller@example.com"), ("assistant", "ok"))
        path = write(tmp_path / "f.jsonl", records, ensure_ascii=True)
        assert find_subject_lines(path, "ZOË.MÜLLER@example.com").lines == [3]

    def test_no_mention(self, tmp_path: Path) -> None:
        path = write(tmp_path / "f.jsonl", varied_examples(10))
        result = find_subject_lines(path, "nobody@example.com")
        assert result.lines == [] and result.count == 0

    def test_empty_identifier_is_refused(self, tmp_path: Path) -> None:
        with pytest.raises(ValueError):
            find_subject_lines(write(tmp_path / "f.jsonl", varied_examples(1)), "  ")
