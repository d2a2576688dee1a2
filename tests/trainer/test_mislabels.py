"""Suspected mislabels (trainer.mislabels): the robust z-score on fixed numbers, and the
scoring of a real (tiny) tuned model flagging a planted outlier."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trainer.mislabels import (
    LOSS_OUTLIER,
    STRUCTURED_FIELD_DISAGREES,
    ExampleLoss,
    bucketed_z,
    first_disagreement,
    length_buckets,
    robust_z,
)
from trainer.recipe import train
from trainer.spec import Hyperparameters, MislabelSpec

PLANTED_LINE = 5
EXCLUDED_LINE = 9


class TestRobustZ:
    def test_modified_z_of_fixed_numbers(self):
        # median 3, |deviations| 2 1 0 1 7 -> MAD 1: z = 0.6745 * (x - 3)
        assert robust_z([1.0, 2.0, 3.0, 4.0, 10.0]) == pytest.approx(
            [-1.349, -0.6745, 0.0, 0.6745, 4.7215]
        )

    def test_equal_values_fall_back_to_the_mean_deviation(self):
        z = robust_z([1.0] * 9 + [2.0])
        assert z[:9] == [0.0] * 9
        assert z[9] == pytest.approx(1.0 / (1.253314 * 0.1))
        assert robust_z([2.0, 2.0, 2.0]) == [0.0, 0.0, 0.0] and robust_z([]) == []

    def test_deterministic_whatever_the_order(self):
        values = [0.3, 0.1, 0.25, 0.2, 3.0, 0.15, 0.22]
        z = dict(zip(values, robust_z(values), strict=True))
        reversed_z = dict(zip(values[::-1], robust_z(values[::-1]), strict=True))
        assert z == reversed_z and max(z, key=z.get) == 3.0 and z[3.0] > 3.5

    def test_length_buckets_hold_their_minimum(self):
        lengths = [10 + i for i in range(40)]
        buckets = length_buckets(lengths, min_size=16, max_buckets=4)
        assert sorted(set(buckets)) == [0, 1]
        assert all(buckets.count(b) >= 16 for b in set(buckets))
        assert buckets[0] == 0 and buckets[-1] == 1  # short ones first
        assert length_buckets([5, 6], min_size=16, max_buckets=4) == [0, 0]

    def test_an_outlier_is_judged_against_its_own_length(self):
        # Long answers cost more per token here; a long one is no outlier among long ones.
        short = [ExampleLoss(i, 0.1 + 0.01 * (i % 3), 10) for i in range(16)]
        long = [ExampleLoss(100 + i, 1.0 + 0.01 * (i % 3), 50) for i in range(16)]
        odd = ExampleLoss(999, 1.0, 10)
        z = bucketed_z([*short, odd, *long], MislabelSpec(min_bucket_examples=16))
        assert z[16] > 3.5 and max(z[17:]) < 3.5

    def test_fields_are_compared_in_the_labels_order(self):
        label = {"vendor": "Acme", "currency": "EUR", "total": "1.00"}
        assert first_disagreement(label, {**label}) is None
        assert first_disagreement(label, {**label, "currency": "USD"}) == "currency"
        assert first_disagreement(label, {"vendor": " acme "}) == "currency"  # missing
        assert first_disagreement(label, None) is None  # not JSON: the check does not apply


def _planted_file(source: Path, target: Path) -> Path:
    """The demo training file with one answer replaced by text unlike every other answer."""
    lines = source.read_text().splitlines()
    record = json.loads(lines[PLANTED_LINE - 1])
    record["messages"][-1]["content"] = "zebra quantum " * 12
    lines[PLANTED_LINE - 1] = json.dumps(record)
    target.write_text("\n".join(lines) + "\n")
    return target


@pytest.fixture(scope="module")
def scored(tiny_model_dir, demo_files, tmp_path_factory):
    from trainer.spec import EvalSpec, TrainSpec

    work = tmp_path_factory.mktemp("mislabels")
    train_path = _planted_file(demo_files[0], work / "train.jsonl")
    spec = TrainSpec(
        base_model_dir=str(tiny_model_dir),
        training_file=str(train_path),
        validation_file=str(demo_files[1]),
        output_dir=str(work / "run"),
        hyperparameters=Hyperparameters(n_epochs=3, batch_size=8, learning_rate_multiplier=10),
        evaluation=EvalSpec(enabled=False),
        exclude_lines=[EXCLUDED_LINE],
        exclude_lines_from="ftjob-0000000000000000",
        seed=7,
    )
    return train(spec)


class TestScoring:
    def test_the_planted_line_is_flagged_first(self, scored):
        report = scored.suspected_mislabels
        assert scored.status == "succeeded" and report is not None
        top = report["flagged"][0]
        assert top["line_number"] == PLANTED_LINE
        assert top["reason"] in (LOSS_OUTLIER, STRUCTURED_FIELD_DISAGREES)
        assert top["score"] > MislabelSpec().z_threshold
        assert top["label"].startswith("zebra quantum")  # not JSON: no structured check
        assert top["model_answer"] is None

    def test_the_cost_is_stated(self, scored):
        figures = scored.suspected_mislabels["figures"]
        assert figures["examples_scored"] == 39  # 40 lines, one excluded
        assert figures["tokens_scored"] > figures["target_tokens_scored"] > 0
        assert figures["scoring_seconds"] >= 0 and figures["flagged"] >= 1

    def test_excluded_lines_are_not_trained_and_are_in_the_lineage(self, scored):
        training = scored.data_files[0]
        assert training["excluded_lines"] == [EXCLUDED_LINE]
        assert training["excluded_lines_from"] == "ftjob-0000000000000000"
        assert training["examples"] == 40  # the file's examples; one of them left out

    def test_scoring_can_be_turned_off(self, make_spec):
        spec = make_spec(max_steps=1, mislabels=MislabelSpec(enabled=False))
        assert train(spec).suspected_mislabels is None

    def test_excluding_every_line_is_refused(self, make_spec):
        with pytest.raises(ValueError, match="no training example"):
            train(make_spec(exclude_lines=list(range(1, 41))))
