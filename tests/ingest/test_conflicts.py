"""Conflicting answers (ingest.conflicts) and structured answers (ingest.structure), pure and
through the upload path (the datasheet, byte-identical from run to run)."""

from __future__ import annotations

import io
import json
from pathlib import Path

from ingest import ingest
from ingest.conflicts import conflicts_of_prompts
from ingest.structure import infer, observe
from tests.ingest.conftest import chat, jsonl, varied_examples


class TestConflicts:
    def test_same_and_near_same_prompts_with_different_answers_form_a_group(
        self, tmp_path: Path
    ) -> None:
        prompts = [f"question {i}: how do I reset the password of account {i}" for i in range(30)]
        answers = [f"open settings then security then reset, step {i}" for i in range(30)]
        prompts += ["What is the refund window for orders?"] * 4 + [
            "what is the refund window for orders"  # near: case and punctuation only
        ]
        answers += ["30 days.", "30 days", "30 DAYS!", "14 days", "30 days"]
        found = conflicts_of_prompts([p.encode() for p in prompts], answers, tmp_path)
        assert found.groups == 1 and found.lines == 5 and found.examples == 35
        group = found.shown[0]
        assert group.lines == [31, 32, 33, 34, 35]
        assert group.answers == 2 and group.majority_lines == 4
        assert group.suspect_lines == [34]
        assert group.similarity >= 0.9
        assert found.rate == round(5 / 35, 6)

    def test_no_majority_no_suspects_and_distinct_prompts_no_groups(self, tmp_path: Path) -> None:
        prompts = ["which region hosts the cluster"] * 2 + [
            f"unrelated question number {i} about invoices and refunds" for i in range(10)
        ]
        answers = ["eu-west", "us-east"] + [f"answer {i}" for i in range(10)]
        found = conflicts_of_prompts([p.encode() for p in prompts], answers, tmp_path)
        assert found.groups == 1 and found.suspects == 0
        assert found.shown[0].majority_lines == 0 and found.shown[0].suspect_lines == []


def structured(severity: str, category: str = "billing", **extra: object) -> str:
    return json.dumps({"severity": severity, "category": category, "ticket": 7, **extra})


class TestStructure:
    def test_schema_value_sets_and_each_kind_of_deviation(self) -> None:
        answers = [structured(s) for s in ["high", "low", "medium"] * 8]
        answers += [
            structured("hgih"),  # a typo of a common value
            json.dumps({"severity": "low", "ticket": "7"}),  # missing key, wrong type
            structured("low", extra=True),  # extra key
            "I think it is low",  # not JSON
        ]
        report = infer(observe(list(range(1, len(answers) + 1)), answers))
        assert report["detected"] is True and report["json_objects"] == 27
        assert report["fields"]["severity"]["values"] == {"high": 8, "low": 10, "medium": 8}
        assert report["fields"]["ticket"]["type"] == "integer"
        assert report["deviations"]["by_reason"] == {
            "extra_key": 1,
            "missing_key": 1,
            "not_json": 1,
            "unknown_value": 1,
            "wrong_type": 1,
        }
        shown = {(d["line"], d["reason"]) for d in report["deviations"]["shown"]}
        assert shown == {
            (25, "unknown_value"),
            (26, "missing_key"),
            (26, "wrong_type"),
            (27, "extra_key"),
            (28, "not_json"),
        }
        typo = next(d for d in report["deviations"]["shown"] if d["reason"] == "unknown_value")
        assert typo["value"] == "hgih" and typo["resembles"] == "high"

    def test_a_new_value_unlike_the_common_ones_is_not_a_typo(self) -> None:
        answers = [structured(s) for s in ["high", "low"] * 10] + [structured("critical")]
        report = infer(observe(list(range(1, 22)), answers))
        assert "unknown_value" not in report["deviations"]["by_reason"]

    def test_prose_answers_are_not_structured(self) -> None:
        report = infer(observe([1, 2, 3], ["one answer", "{not json", structured("low")]))
        assert report == {"answers": 3, "json_objects": 1, "detected": False}


def test_the_datasheet_carries_both_and_is_byte_identical_run_to_run(tmp_path: Path) -> None:
    examples = varied_examples(60, seed=3)
    for i, severity in enumerate(["high", "low", "medium"] * 6 + ["hgih"]):
        examples.append(
            chat(
                ("user", f"Classify ticket {i} about a late refund"),
                ("assistant", structured(severity)),
            )
        )
    examples += [
        chat(("user", "Where is my parcel?"), ("assistant", a)) for a in ["Depot", "Depot", "Lost"]
    ]
    data = jsonl(*examples)
    sheets = []
    for attempt in range(2):
        store = tmp_path / f"s{attempt}"
        result = ingest(io.BytesIO(data), dest_dir=store, pii_action="allow")
        sheets.append(json.dumps(result.report.to_dict(), sort_keys=False).encode())
        assert not [p for p in store.iterdir() if p.name.startswith(".")]  # temporaries gone
    assert sheets[0] == sheets[1]
    sheet = json.loads(sheets[0])
    assert sheet["schema"] == "tunegate.datasheet/2"
    parcel = [g for g in sheet["conflicts"]["shown"] if g["lines"] == [80, 81, 82]]
    assert parcel and parcel[0]["suspect_lines"] == [82]
    assert sheet["structure"]["detected"] is False  # 19 of 82 answers are JSON
