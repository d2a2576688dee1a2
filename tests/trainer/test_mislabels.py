"""Suspected mislabels (trainer.mislabels): the robust z-score on fixed numbers, the cost of
each JSON field read off the per-token losses, the verdicts of the field check, and the
scoring of a real (tiny) tuned model flagging a planted outlier."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trainer.data import tokenize_messages
from trainer.fixtures import default_tiny_corpus, train_bpe_tokenizer
from trainer.mislabels import (
    CLEARED,
    LOSS_OUTLIER,
    STRUCTURED_FIELD_DISAGREES,
    ExampleLoss,
    _Evidence,
    _verdict,
    bucketed_z,
    costly_fields,
    field_costs,
    field_spans,
    first_disagreement,
    length_buckets,
    parse_object,
    robust_z,
    token_texts,
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


@pytest.fixture(scope="module")
def tokenizer():
    return train_bpe_tokenizer(default_tiny_corpus(), vocab_size=600)


class TestFieldCosts:
    LABEL = '{"vendor": "Kestrel Print Works Ltd", "total": "129.50", "paid": false}'

    def test_field_spans_cover_each_key_and_value(self):
        spans = field_spans(self.LABEL)
        assert spans is not None
        assert [self.LABEL[a:b] for a, b in spans.values()] == [
            '"vendor": "Kestrel Print Works Ltd"',
            '"total": "129.50"',
            '"paid": false',
        ]
        assert field_spans(' { "a" : [1, {"b": 2}] } ') == {"a": (3, 22)}
        for not_one_object in ("[1]", '{"a": 1} tail', '{"a": 1,}', '{"a" 1}', "plain"):
            assert field_spans(not_one_object) is None

    def test_the_loss_is_split_over_the_fields(self, tokenizer):
        messages = [
            {"role": "user", "content": "Kestrel Print Works Ltd, total 129.50"},
            {"role": "assistant", "content": self.LABEL},
        ]
        example = tokenize_messages(tokenizer, messages)
        ids = [example.input_ids[i] for i in range(1, example.n_tokens) if example.trained[i]]
        texts = token_texts(tokenizer, ids)
        assert "".join(texts).startswith(self.LABEL)
        # Every token of the total's digits costs 2 nats, every other token 0.01.
        start, end = (field_spans(self.LABEL) or {})["total"]
        losses, position = [], 0
        for text in texts:
            digits = any(c.isdigit() for c in text) and start < position + len(text) <= end
            losses.append(2.0 if digits else 0.01)
            position += len(text)
        loss = ExampleLoss(1, sum(losses) / len(losses), len(losses), tuple(losses))
        costs = field_costs(tokenizer, example, loss, self.LABEL)
        assert costs is not None and list(costs) == ["vendor", "total", "paid"]
        assert costs["total"] > 2.0 > 0.2 > costs["vendor"] and costs["paid"] < 0.2
        assert field_costs(tokenizer, example, loss, "not json") is None

    def test_a_costly_field_is_costly_in_nats_and_for_its_field(self):
        spec = MislabelSpec()
        usual = [{"vendor": 0.05 + 0.01 * (i % 5), "total": 0.1} for i in range(30)]
        wrong = {"vendor": 12.0, "total": 0.1}  # an outlier, and unlikely in itself
        odd = {"vendor": 2.0, "total": 0.1}  # an outlier, but 2 nats: plausible
        costly = costly_fields([*usual, wrong, odd, None], spec)
        assert costly[30] == ["vendor"] and costly[31] == [] and costly[32] == []
        # A model that pays about as much for every vendor marks none of them.
        flat = [{"vendor": 30.0 + (i % 7)} for i in range(30)]
        assert not any(costly_fields(flat, spec))


def _evidence(answer: str | None, *, label_cost: float, answer_cost: float, z: float = 50.0):
    label = '{"vendor": "Acme", "total": "1.00"}'
    evidence = _Evidence(
        losses=[ExampleLoss(1, 0.5, 12)],
        scores=[z],
        labels=[([{"role": "user", "content": "invoice"}], label)],
        structured=[parse_object(label)],
        costs=[{"vendor": label_cost, "total": 0.01}],
        costly=[["vendor"] if label_cost > MislabelSpec().margin_nats else []],
    )
    if answer is not None:
        evidence.answers[0] = answer
        evidence.answer_costs[0] = {"vendor": answer_cost, "total": 0.01}
    return evidence


class TestVerdicts:
    def test_a_contradicted_costly_field_is_flagged_with_its_margin(self):
        evidence = _evidence('{"vendor": "Zenith", "total": "1.00"}', label_cost=15, answer_cost=1)
        assert _verdict(evidence, 0, MislabelSpec()) == (STRUCTURED_FIELD_DISAGREES, "vendor", 14)

    def test_the_model_unsure_of_its_own_value_clears_the_line(self):
        evidence = _evidence('{"vendor": "Zenith", "total": "1.00"}', label_cost=9, answer_cost=4)
        assert _verdict(evidence, 0, MislabelSpec())[0] == CLEARED

    def test_an_answer_equal_to_the_label_clears_it(self):
        evidence = _evidence('{"vendor": " acme", "total": "1.00"}', label_cost=15, answer_cost=0)
        assert _verdict(evidence, 0, MislabelSpec())[0] == CLEARED

    def test_no_costly_field_no_suspect_whatever_the_loss(self):
        evidence = _evidence(None, label_cost=1, answer_cost=0, z=40)
        assert _verdict(evidence, 0, MislabelSpec()) == (None, None, None)

    def test_an_answer_not_in_json_leaves_it_to_the_loss(self):
        high = _evidence("I cannot say", label_cost=15, answer_cost=0, z=5)
        assert _verdict(high, 0, MislabelSpec()) == (LOSS_OUTLIER, "vendor", None)
        low = _evidence("I cannot say", label_cost=15, answer_cost=0, z=2)
        assert _verdict(low, 0, MislabelSpec()) == (None, None, None)


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
