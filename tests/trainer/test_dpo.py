"""DPO on LoRA: the loss against a hand-computed value, packed sequence log-probabilities
against a plain forward pass, and a tiny run whose loss falls and whose evaluation ranks
held-out pairs with the tuned and the base model."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from trainer.base_models import load_base_model
from trainer.data import DataFileError, tokenize_preference
from trainer.dpo import demo_preference_records, sequence_logps, sigmoid_dpo_loss
from trainer.recipe import train
from trainer.results import EvaluationEvent, StepEvent
from trainer.spec import DpoSpec, EvalSpec, Hyperparameters


def test_loss_matches_a_hand_computed_value() -> None:
    # log-ratios: chosen -1 - (-1.5) = 0.5, rejected -2 - (-1.5) = -0.5; margin 1.0;
    # beta 0.5: loss = -log sigmoid(0.5) = log(1 + e^-0.5) = 0.474077...
    scored = sigmoid_dpo_loss(
        torch.tensor([-1.0, -3.0]),
        torch.tensor([-2.0, -3.0]),
        torch.tensor([-1.5, -3.0]),
        torch.tensor([-1.5, -3.0]),
        beta=0.5,
    )
    assert scored.losses[0].item() == pytest.approx(math.log(1 + math.exp(-0.5)), abs=1e-6)
    assert scored.losses[0].item() == pytest.approx(0.474077, abs=1e-6)
    assert scored.losses[1].item() == pytest.approx(math.log(2), abs=1e-6)  # no margin
    assert scored.chosen_rewards.tolist() == pytest.approx([0.25, 0.0])
    assert scored.rejected_rewards.tolist() == pytest.approx([-0.25, 0.0])


def _preference_file(source: Path, target: Path) -> Path:
    chats = [json.loads(line) for line in source.read_text().splitlines()]
    target.write_text("".join(json.dumps(r) + "\n" for r in demo_preference_records(chats)))
    return target


@pytest.fixture(scope="module")
def preference_files(demo_files: tuple[Path, Path], tmp_path_factory) -> tuple[Path, Path]:
    directory = tmp_path_factory.mktemp("preference")
    train_path, validation_path = demo_files
    return (
        _preference_file(train_path, directory / "train.jsonl"),
        _preference_file(validation_path, directory / "validation.jsonl"),
    )


def test_packed_log_probs_equal_a_plain_forward_pass(tiny_model_dir, preference_files) -> None:
    loaded = load_base_model(tiny_model_dir)
    record = json.loads(preference_files[1].read_text().splitlines()[0])
    pair = tokenize_preference(loaded.tokenizer, record)
    with torch.no_grad():
        packed = sequence_logps(loaded.model, [pair.chosen, pair.rejected])
        for index, sequence in enumerate((pair.chosen, pair.rejected)):
            ids = torch.tensor([sequence.input_ids])
            logps = torch.log_softmax(loaded.model(ids).logits[0, :-1].float(), dim=-1)
            picked = logps.gather(1, ids[0, 1:, None])[:, 0]
            expected = picked[torch.tensor(sequence.trained[1:])].sum()
            assert packed[index].item() == pytest.approx(expected.item(), rel=1e-4)
    # Only the output (and its end of turn) is a target; the prompt is shared.
    assert (
        pair.chosen.input_ids[: pair.chosen.trained.index(True)]
        == (pair.rejected.input_ids[: pair.rejected.trained.index(True)])
    )


def test_a_tiny_dpo_run_learns_the_preferences(make_spec, preference_files) -> None:
    train_path, validation_path = preference_files
    events: list = []
    spec = make_spec(
        training_file=str(train_path),
        validation_file=str(validation_path),
        method="dpo",
        dpo=DpoSpec(beta=0.5),
        hyperparameters=Hyperparameters(n_epochs=3, batch_size=8, learning_rate_multiplier=10),
        evaluation=EvalSpec(enabled=True, min_preference_accuracy_margin=0.0),
    )
    result = train(spec, on_event=events.append)
    assert result.status == "succeeded"
    losses = [event.loss for event in events if isinstance(event, StepEvent)]
    assert losses[0] == pytest.approx(math.log(2), abs=1e-3)  # policy == reference at first
    assert sum(losses[-3:]) / 3 < losses[0]
    report = result.evaluation
    assert report is not None and report["method"] == "dpo"
    tuned, base = report["systems"]["tuned"], report["systems"]["base"]
    assert base["preference_accuracy"] == 0.5 and tuned["preference_accuracy"] > 0.8
    assert tuned["ranking_accuracy"] >= base["ranking_accuracy"]
    assert report["verdict"]["checks"][0]["value"] == tuned["preference_accuracy"] - 0.5
    assert [e for e in events if isinstance(e, EvaluationEvent)][0].systems == report["systems"]
    assert report["verdict"]["checks"][0]["name"] == "tuned_beats_base_preference_accuracy"
    assert result.resolved_config["spec"]["method"] == "dpo"


def test_dpo_refuses_chat_data_and_sft_refuses_preferences(make_spec, demo_files, preference_files):
    with pytest.raises(DataFileError, match="preference"):
        train(make_spec(method="dpo", training_file=str(demo_files[0])))
    with pytest.raises(DataFileError, match="dpo"):
        train(make_spec(training_file=str(preference_files[0])))
