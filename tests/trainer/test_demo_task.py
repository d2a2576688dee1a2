from __future__ import annotations

import json
from pathlib import Path

from trainer.__main__ import main
from trainer.demo_task import FIELDS, generate_examples, write_demo_files


class TestDemoTask:
    def test_every_answer_is_the_fixed_json_shape(self):
        for example in generate_examples(count=200, seed=1):
            roles = [message["role"] for message in example["messages"]]
            assert roles == ["system", "user", "assistant"]
            answer = json.loads(example["messages"][2]["content"])
            assert tuple(answer) == FIELDS
            assert answer["invoice_number"] in example["messages"][1]["content"]
            assert answer["vendor"] in example["messages"][1]["content"]
            assert answer["currency"] in {"EUR", "USD", "GBP", "CHF"}
            assert len(answer["date"]) == 10 and answer["total"].count(".") == 1

    def test_generation_is_deterministic_per_seed(self):
        assert generate_examples(count=20, seed=5) == generate_examples(count=20, seed=5)
        assert generate_examples(count=20, seed=5) != generate_examples(count=20, seed=6)

    def test_files_hold_the_demo_sizes_without_shared_invoices(self, tmp_path: Path):
        train_path, validation_path = write_demo_files(tmp_path)
        train = [json.loads(line) for line in train_path.read_text().splitlines()]
        validation = [json.loads(line) for line in validation_path.read_text().splitlines()]
        assert len(train) >= 500 and len(validation) >= 50

        def numbers(examples):
            return {json.loads(e["messages"][2]["content"])["invoice_number"] for e in examples}

        assert not numbers(train) & numbers(validation)


def test_the_command_line_writes_the_demo_files(tmp_path: Path, capsys):
    main(["demo-task", "write", str(tmp_path), "--train", "5", "--validation", "2"])
    written = json.loads(capsys.readouterr().out)
    assert len(Path(written["train"]).read_text().splitlines()) == 5
    assert len(Path(written["validation"]).read_text().splitlines()) == 2
