from __future__ import annotations

from pathlib import Path

import pytest

from ingest import ReportSettings
from ingest.tokens import APPROXIMATION, BpeTokenCounter, approximate_tokens
from tests.ingest.conftest import chat, jsonl, varied_examples


class TestApproximateTokens:
    def test_english_is_a_quarter_of_its_characters_plus_role_markers(self) -> None:
        assert approximate_tokens(chars=400, utf8_bytes=400, messages=2) == 100 + 8

    def test_multibyte_text_costs_more(self) -> None:
        ascii_only = approximate_tokens(chars=100, utf8_bytes=100, messages=0)
        japanese = approximate_tokens(chars=100, utf8_bytes=300, messages=0)
        assert japanese == 125 and japanese > ascii_only


@pytest.fixture(scope="module")
def tokenizer_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE(unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    corpus = [" ".join(str(e["messages"][1]["content"]) for e in varied_examples(200))]
    tokenizer.train_from_iterator(
        corpus, trainers.BpeTrainer(vocab_size=300, special_tokens=["[UNK]"])
    )
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    tokenizer.save(str(path))
    return path


class TestDatasheet:
    def test_counts_roles_tokens_duplicates_and_short_answers(self, run_ingest) -> None:
        examples = varied_examples(40)
        examples[10] = chat(("system", "Be brief."), ("user", "Is it on?"), ("assistant", "Yes."))
        examples[20] = examples[5]
        report = run_ingest(jsonl(*examples)).report
        data = report.to_dict()
        assert data["schema"] == "tunegate.datasheet/2"
        assert data["examples"] == 40 and data["format"] == "chat"
        assert data["roles"] == {"system": 1, "user": 40, "assistant": 40}
        assert data["tokenizer"] == APPROXIMATION
        tokens = data["tokens"]
        assert tokens["min"] <= tokens["p50"] <= tokens["p95"] <= tokens["max"]
        assert tokens["total"] == pytest.approx(tokens["mean"] * 40, abs=1)
        assert data["exact_duplicates"]["count"] == 1
        assert data["exact_duplicates"]["pairs"][0]["line"] == 21
        assert data["exact_duplicates"]["pairs"][0]["of_line"] == 6
        assert data["short_answers"] == {"under_chars": 8, "count": 1, "lines": [11]}
        assert data["faults"] == {"count": 0, "shown": []}

    def test_near_duplicates_in_the_report(self, run_ingest) -> None:
        examples = varied_examples(60, seed=4)
        answer = examples[3]["messages"][1]["content"]
        examples[50] = chat(
            ("user", examples[3]["messages"][0]["content"]),
            ("assistant", answer.replace(" ", "  ", 1) + " thanks"),
        )
        near = run_ingest(jsonl(*examples)).report.to_dict()["near_duplicates"]
        assert near["threshold"] == 0.8
        assert [(p["line"], p["of_line"]) for p in near["pairs"]] == [(51, 4)]

    def test_exact_counts_with_a_tokenizer_file(self, run_ingest, tokenizer_file: Path) -> None:
        from tokenizers import Tokenizer

        examples = varied_examples(5)
        report = run_ingest(
            jsonl(*examples), report=ReportSettings(tokenizer_file=tokenizer_file)
        ).report
        tokenizer = Tokenizer.from_file(str(tokenizer_file))
        expected = [
            sum(
                len(tokenizer.encode(m["content"], add_special_tokens=False).ids)
                for m in e["messages"]
            )
            + 4 * len(e["messages"])
            for e in examples
        ]
        assert report.tokens is not None
        assert report.tokens.total == sum(expected) and report.tokens.max == max(expected)
        assert report.tokenizer == BpeTokenCounter(tokenizer_file).name
