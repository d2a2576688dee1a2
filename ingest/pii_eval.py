"""Precision and recall of the PII recognisers on a labelled set (JSON Lines of
``{"text", "spans": [{"start", "end", "type"}]}``, character offsets).

A prediction counts as correct when its type and character span equal a gold span's.
The set the project measures itself on is tests/data/pii/labelled.jsonl: the tests hold
the floors (tests/ingest/test_pii.py), bench/uploads.py prints the table.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from ingest.pii import PiiFinding, scan_text


@dataclass(frozen=True)
class Score:
    true_positives: int
    false_positives: int
    false_negatives: int

    @property
    def precision(self) -> float:
        predicted = self.true_positives + self.false_positives
        return self.true_positives / predicted if predicted else 1.0

    @property
    def recall(self) -> float:
        actual = self.true_positives + self.false_negatives
        return self.true_positives / actual if actual else 1.0


def load_labelled(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def char_spans(text: str, findings: list[PiiFinding]) -> set[tuple[int, int, str]]:
    """Byte offsets (what the recognisers return) -> character offsets."""
    data = text.encode()
    return {(len(data[: f.start].decode()), len(data[: f.end].decode()), f.kind) for f in findings}


def score(examples: list[dict]) -> dict[str, Score]:
    """Per type, plus "overall" (micro-averaged)."""
    tp: Counter[str] = Counter()
    fp: Counter[str] = Counter()
    fn: Counter[str] = Counter()
    for example in examples:
        gold = {(s["start"], s["end"], s["type"]) for s in example["spans"]}
        predicted = char_spans(example["text"], scan_text(example["text"]))
        for _, _, kind in gold & predicted:
            tp[kind] += 1
        for _, _, kind in predicted - gold:
            fp[kind] += 1
        for _, _, kind in gold - predicted:
            fn[kind] += 1
    kinds = sorted(set(tp) | set(fp) | set(fn))
    table = {kind: Score(tp[kind], fp[kind], fn[kind]) for kind in kinds}
    table["overall"] = Score(sum(tp.values()), sum(fp.values()), sum(fn.values()))
    return table


def format_table(table: dict[str, Score]) -> list[str]:
    lines = [f"{'type':16s} {'precision':>9s} {'recall':>7s} {'tp':>4s} {'fp':>4s} {'fn':>4s}"]
    for kind, s in table.items():
        lines.append(
            f"{kind:16s} {s.precision:9.3f} {s.recall:7.3f} "
            f"{s.true_positives:4d} {s.false_positives:4d} {s.false_negatives:4d}"
        )
    return lines
