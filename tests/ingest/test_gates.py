from __future__ import annotations

from ingest import min_examples_gate, overlap_gate
from tests.ingest.conftest import jsonl, varied_examples


class TestMinExamples:
    def test_refused_below_the_minimum_with_the_numbers(self) -> None:
        result = min_examples_gate(examples=499, minimum=500)
        assert not result.passed and result.code == "too_few_examples"
        assert result.details == {"examples": 499, "minimum": 500}
        assert "499" in result.message and "500" in result.message

    def test_passes_at_the_minimum(self) -> None:
        assert min_examples_gate(examples=500, minimum=500).passed


class TestOverlapGate:
    def test_from_the_fingerprints_written_at_upload(self, run_ingest) -> None:
        examples = varied_examples(120, seed=11)
        training = run_ingest(jsonl(*examples[:100]))
        clean = run_ingest(jsonl(*examples[100:]))
        leaky = run_ingest(jsonl(*examples[100:110], examples[7], examples[42]))
        assert training.stored and clean.stored and leaky.stored

        passed = overlap_gate(
            training_fingerprint=training.stored.fingerprint,
            validation_fingerprint=clean.stored.fingerprint,
        )
        assert passed.passed and passed.details["overlapping_lines"] == 0

        refused = overlap_gate(
            training_fingerprint=training.stored.fingerprint,
            validation_fingerprint=leaky.stored.fingerprint,
        )
        assert not refused.passed and refused.code == "train_validation_overlap"
        assert refused.details["exact"]["count"] == 2
        assert [p["line"] for p in refused.details["exact"]["pairs"]] == [11, 12]

        tolerated = overlap_gate(
            training_fingerprint=training.stored.fingerprint,
            validation_fingerprint=leaky.stored.fingerprint,
            max_overlapping_lines=2,
        )
        assert tolerated.passed
