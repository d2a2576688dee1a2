from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import TypeVar

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from trainer.base_models import load_base_model
from trainer.checkpoints import ADAPTER_WEIGHTS
from trainer.hashing import sha256_file
from trainer.recipe import ARTIFACT_DIR_NAME, setup, train, train_loop
from trainer.results import (
    CheckpointEvent,
    EarlyStoppedEvent,
    EpochEvent,
    EvaluationEvent,
    RunCancelledEvent,
    RunPausedEvent,
    RunStartedEvent,
    RunSucceededEvent,
    StepEvent,
    TrainEvent,
    ValidationEvent,
)
from trainer.spec import EvalSpec, Hyperparameters, LoraSpec

E = TypeVar("E", bound=TrainEvent)


class EventLog:
    def __init__(self) -> None:
        self.events: list[TrainEvent] = []

    def __call__(self, event: TrainEvent) -> None:
        self.events.append(event)

    def of(self, kind: type[E]) -> list[E]:
        return [event for event in self.events if isinstance(event, kind)]


def _write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return path


class TestTraining:
    def test_loss_falls(self, make_spec):
        events = EventLog()
        result = train(
            make_spec(
                hyperparameters=Hyperparameters(
                    n_epochs=3, batch_size=8, learning_rate_multiplier=15
                )
            ),
            events,
        )
        losses = [event.loss for event in events.of(StepEvent)]
        validation = [event.validation_loss for event in events.of(ValidationEvent)]
        assert result.status == "succeeded" and len(losses) == result.total_steps == 15
        assert sum(losses[-3:]) / 3 < losses[0] - 0.1
        assert len(validation) == 3 and validation[-1] < validation[0]
        assert result.best_validation_loss == min(validation)

    def test_only_lora_parameters_change(self, make_spec):
        run = setup(make_spec())
        before = {name: p.detach().clone() for name, p in run.model.peft.named_parameters()}
        train_loop(run, lambda event: None, lambda: None)
        changed = {
            name
            for name, p in run.model.peft.named_parameters()
            if not torch.equal(p, before[name])
        }
        lora = {name for name in before if "lora_" in name}
        lora_b = {name for name in lora if "lora_B" in name}
        assert changed and changed <= lora
        assert lora_b <= changed
        assert all(
            not p.requires_grad for name, p in run.model.peft.named_parameters() if name not in lora
        )

    def test_default_targets_are_every_attention_and_mlp_projection(self, make_spec):
        run = setup(make_spec())
        assert run.model.target_modules == [
            "down_proj",
            "gate_proj",
            "k_proj",
            "o_proj",
            "q_proj",
            "up_proj",
            "v_proj",
        ]
        adapted = {
            name.split(".")[-4] for name, _ in run.model.peft.named_parameters() if "lora_A" in name
        }
        assert adapted == set(run.model.target_modules)

    def test_events_report_progress(self, make_spec):
        events = EventLog()
        result = train(make_spec(), events)
        steps = events.of(StepEvent)
        assert [event.step for event in steps] == list(range(1, result.total_steps + 1))
        assert steps[0].loss > 0 and steps[0].learning_rate > 0 and steps[0].tokens_per_second > 0
        assert steps[-1].trained_tokens == result.trained_tokens > 0
        assert steps[-1].seconds_remaining == 0 and steps[-1].estimated_finish
        assert isinstance(events.events[0], RunStartedEvent)
        assert isinstance(events.events[-1], RunSucceededEvent)
        assert events.events[-1].adapter_sha256 == result.adapter_sha256
        assert len(events.of(EpochEvent)) == 1

    def test_padded_and_packed_runs_start_from_the_same_loss(self, make_spec):
        first_losses = []
        for packing in (True, False):
            events = EventLog()
            train(make_spec(packing=packing, max_steps=1), events)
            first_losses.append(events.of(StepEvent)[0].loss)
        assert first_losses[0] == pytest.approx(first_losses[1], rel=1e-5)

    def test_gradient_accumulation_over_micro_batches_matches_one_pass(self, make_spec):
        adapters, first_losses = [], []
        for micro_batch_tokens in (256, 4096):
            events = EventLog()
            result = train(
                make_spec(max_seq_len=256, micro_batch_tokens=micro_batch_tokens, max_steps=3),
                events,
            )
            first_losses.append(events.of(StepEvent)[0].loss)
            adapters.append(load_file(Path(result.artifact_dir) / "adapter" / ADAPTER_WEIGHTS))
        assert first_losses[0] == pytest.approx(first_losses[1], rel=1e-5)
        for name, tensor in adapters[0].items():
            torch.testing.assert_close(tensor, adapters[1][name], rtol=1e-4, atol=1e-6)

    def test_dora_and_rslora_train(self, make_spec):
        result = train(make_spec(lora=LoraSpec(r=4, use_dora=True, use_rslora=True), max_steps=2))
        config = json.loads(Path(result.artifact_dir, "adapter", "adapter_config.json").read_text())
        assert config["use_dora"] and config["use_rslora"] and config["r"] == 4


class TestDeterminism:
    def test_same_spec_and_seed_give_the_same_adapter(self, make_spec):
        first = train(make_spec(max_steps=3))
        second = train(make_spec(max_steps=3))
        assert first.adapter_sha256 == second.adapter_sha256
        assert first.adapter_sha256 == sha256_file(
            Path(first.artifact_dir) / "adapter" / "adapter_model.safetensors"
        )

    def test_another_seed_gives_another_adapter(self, make_spec):
        assert (
            train(make_spec(max_steps=3)).adapter_sha256
            != train(make_spec(max_steps=3, seed=8)).adapter_sha256
        )


class TestCheckpointsAndResume:
    def test_resume_equals_uninterrupted_run(self, make_spec):
        hyper = Hyperparameters(n_epochs=2, batch_size=8, learning_rate_multiplier=10)
        uninterrupted = train(make_spec(hyperparameters=hyper, checkpoint_every_steps=4))

        interrupted_spec = make_spec(hyperparameters=hyper, checkpoint_every_steps=4)
        events = EventLog()
        interrupted = train(
            interrupted_spec, events, should_stop=lambda: bool(events.of(CheckpointEvent))
        )
        assert interrupted.status == "cancelled" and interrupted.steps_completed == 4
        checkpoint = Path(interrupted.checkpoints[0].path)
        assert checkpoint.name == "step-000004"

        resumed = train(
            make_spec(
                hyperparameters=hyper,
                checkpoint_every_steps=4,
                resume_from_checkpoint=str(checkpoint),
            )
        )
        assert resumed.steps_completed == uninterrupted.steps_completed == 10
        assert resumed.adapter_sha256 == uninterrupted.adapter_sha256
        assert resumed.best_validation_loss == uninterrupted.best_validation_loss
        assert (
            interrupted.checkpoints[0].adapter_sha256 == uninterrupted.checkpoints[0].adapter_sha256
        )

    def test_epoch_ends_and_the_clock_write_checkpoints_with_openai_metrics(self, make_spec):
        hyper = Hyperparameters(n_epochs=2, batch_size=8, learning_rate_multiplier=10)
        events = EventLog()
        result = train(make_spec(hyperparameters=hyper, checkpoint_every_epoch=True), events)
        assert [c.step for c in result.checkpoints] == [5, 10]
        for event in events.of(CheckpointEvent):
            metrics = event.metrics
            assert set(metrics) == {
                "train_loss",
                "train_mean_token_accuracy",
                "valid_loss",
                "valid_mean_token_accuracy",
                "full_valid_loss",
                "full_valid_mean_token_accuracy",
            }
            assert metrics["train_loss"] > 0 and 0 <= metrics["train_mean_token_accuracy"] <= 1
            # Epoch ends validate on the whole held-out set: valid and full_valid agree.
            assert metrics["valid_loss"] == metrics["full_valid_loss"] > 0
            assert 0 <= metrics["valid_mean_token_accuracy"] <= 1
        # A clock-driven checkpoint between validations has no validation figures.
        timed = EventLog()
        train(make_spec(max_steps=2, checkpoint_every_minutes=1e-9, eval_every_steps=2), timed)
        first, second = timed.of(CheckpointEvent)
        assert (first.step, second.step) == (1, 2)
        assert first.metrics["valid_loss"] is None and second.metrics["valid_loss"] is not None

    def test_resume_refuses_a_checkpoint_of_another_run(self, make_spec):
        first = train(make_spec(max_steps=2, checkpoint_every_steps=2))
        with pytest.raises(ValueError, match="different run"):
            train(make_spec(max_steps=2, seed=99, resume_from_checkpoint=first.checkpoints[0].path))


class TestPause:
    def test_a_paused_and_resumed_run_draws_the_uninterrupted_loss_curve(self, make_spec):
        # Dropout on: the resumed run must also continue the random generators.
        fields = {
            "hyperparameters": Hyperparameters(
                n_epochs=2, batch_size=4, learning_rate_multiplier=10
            ),
            "lora": LoraSpec(dropout=0.1),
            "checkpoint_every_epoch": True,
        }
        whole = EventLog()
        uninterrupted = train(make_spec(**fields), whole)

        first = EventLog()
        paused = train(
            make_spec(**fields), first, should_pause=lambda: len(first.of(StepEvent)) >= 3
        )
        assert paused.status == "paused" and paused.steps_completed == 3
        assert isinstance(first.events[-1], RunPausedEvent)
        assert [c.step for c in paused.checkpoints] == [3]
        assert paused.adapter_sha256 is None and paused.files == []

        rest = EventLog()
        resumed = train(
            make_spec(**fields, resume_from_checkpoint=paused.checkpoints[0].path), rest
        )
        assert rest.of(RunStartedEvent)[0].step == 3
        curve = [(e.step, e.loss) for e in first.of(StepEvent) + rest.of(StepEvent)]
        expected = [(e.step, e.loss) for e in whole.of(StepEvent)]
        assert [step for step, _ in curve] == [step for step, _ in expected]
        assert [loss for _, loss in curve] == pytest.approx([loss for _, loss in expected])
        assert resumed.adapter_sha256 == uninterrupted.adapter_sha256
        assert resumed.trained_tokens == uninterrupted.trained_tokens

    def test_a_pause_before_the_first_step_writes_nothing(self, make_spec):
        result = train(make_spec(), should_pause=lambda: True)
        assert result.status == "paused" and result.steps_completed == 0
        assert result.checkpoints == []

    def test_a_pause_during_evaluation_resumes_at_evaluation(self, make_spec):
        fields = {
            "max_steps": 2,
            "checkpoint_every_epoch": True,
            "evaluation": EvalSpec(
                max_generation_examples=1, max_new_tokens=2, generation_batch_size=1
            ),
        }
        events = EventLog()
        paused = train(
            make_spec(**fields), events, should_pause=lambda: bool(events.of(ValidationEvent))
        )
        # max_steps ends the loop mid-epoch: the end-of-training checkpoint is the resume
        # point, and nothing was evaluated or saved.
        assert paused.status == "paused" and [c.step for c in paused.checkpoints] == [2]
        assert not events.of(EvaluationEvent)
        rest = EventLog()
        resumed = train(
            make_spec(**fields, resume_from_checkpoint=paused.checkpoints[0].path), rest
        )
        assert resumed.status == "succeeded" and not rest.of(StepEvent)
        assert rest.of(EvaluationEvent)


class TestCancel:
    def test_cancel_before_the_first_step(self, make_spec):
        spec = make_spec()
        result = train(spec, should_stop=lambda: True)
        assert result.status == "cancelled" and result.steps_completed == 0
        assert result.files == [] and result.adapter_sha256 is None
        assert not (Path(spec.output_dir) / ARTIFACT_DIR_NAME).exists()

    def test_cancel_stops_within_one_step_and_leaves_no_final_artifacts(self, make_spec):
        spec = make_spec(
            hyperparameters=Hyperparameters(n_epochs=3, batch_size=4, learning_rate_multiplier=1)
        )
        events = EventLog()
        result = train(spec, events, should_stop=lambda: len(events.of(StepEvent)) >= 2)
        assert result.status == "cancelled" and result.steps_completed == 2 < result.total_steps
        assert isinstance(events.events[-1], RunCancelledEvent)
        output = Path(spec.output_dir)
        assert not (output / ARTIFACT_DIR_NAME).exists()
        assert (
            not any(path.name.startswith(f".{ARTIFACT_DIR_NAME}") for path in output.glob(".*"))
            if output.exists()
            else True
        )

    def test_cancel_during_evaluation_leaves_no_final_artifacts(self, make_spec):
        spec = make_spec(
            max_steps=1,
            evaluation=EvalSpec(
                max_generation_examples=2, max_new_tokens=4, generation_batch_size=1
            ),
        )
        events = EventLog()
        result = train(spec, events, should_stop=lambda: bool(events.of(ValidationEvent)))
        assert result.status == "cancelled" and result.steps_completed == 1
        assert not (Path(spec.output_dir) / ARTIFACT_DIR_NAME).exists()


class TestEarlyStopping:
    def test_stops_on_rising_validation_loss_and_keeps_the_best_adapter(
        self, make_spec, tmp_path: Path
    ):
        training = _write_jsonl(
            tmp_path / "yes.jsonl",
            [{"prompt": f"question {i}", "completion": "yes yes yes yes"} for i in range(24)],
        )
        validation = _write_jsonl(
            tmp_path / "no.jsonl",
            [{"prompt": f"question {i}", "completion": "no no no no"} for i in range(4)],
        )
        events = EventLog()
        result = train(
            make_spec(
                training_file=str(training),
                validation_file=str(validation),
                hyperparameters=Hyperparameters(
                    n_epochs=4, batch_size=4, learning_rate_multiplier=25
                ),
                eval_every_steps=1,
                early_stopping_patience=2,
                checkpoint_every_steps=1,
            ),
            events,
        )
        assert result.stopped_early and result.steps_completed < result.total_steps
        assert events.of(EarlyStoppedEvent)
        validation_losses = [event.validation_loss for event in events.of(ValidationEvent)]
        assert result.best_validation_loss == min(validation_losses)
        assert validation_losses[-1] > result.best_validation_loss
        best_checkpoint = next(c for c in result.checkpoints if c.step == result.best_step)
        assert result.adapter_sha256 == best_checkpoint.adapter_sha256


class TestArtifacts:
    # PeftModel.from_pretrained (peft 0.21) reads transformers 5's deprecated
    # is_gradient_checkpointing.
    @pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing:FutureWarning")
    def test_full_run_writes_hashed_artifacts_evaluation_and_merged_weights(
        self, make_spec, tiny_model_dir: Path
    ):
        spec = make_spec(
            validation_file=None,
            max_steps=3,
            export_merged=True,
            evaluation=EvalSpec(
                held_out_fraction=0.1,
                max_generation_examples=3,
                max_new_tokens=6,
                ood_max_tokens=256,
            ),
        )
        events = EventLog()
        result = train(spec, events)
        artifact_dir = Path(result.artifact_dir)

        listed = {file.relative_path: file for file in result.files}
        on_disk = {
            p.relative_to(artifact_dir).as_posix() for p in artifact_dir.rglob("*") if p.is_file()
        }
        assert on_disk == set(listed) | {"SHA256SUMS"}
        for relative_path, file in listed.items():
            assert sha256_file(artifact_dir / relative_path) == file.sha256
            assert f"{file.sha256}  {relative_path}" in (artifact_dir / "SHA256SUMS").read_text()
        assert {
            "adapter/adapter_model.safetensors",
            "adapter/adapter_config.json",
            "training_config.json",
            "metrics.json",
            "eval_report.json",
            "MODEL_CARD.md",
            "merged/model.safetensors",
        } <= set(listed)
        assert listed["adapter/adapter_model.safetensors"].sha256 == result.adapter_sha256

        config = json.loads((artifact_dir / "training_config.json").read_text())
        assert config["resolved_hyperparameters"]["batch_size"] == 8
        assert config["held_out"]["source"] == "training_split"
        assert len(config["held_out"]["line_numbers"]) == 4
        assert config["base_model"]["manifest_sha256"] == result.base_model_sha256

        report = json.loads((artifact_dir / "eval_report.json").read_text())
        assert set(report["systems"]) == {"base_zero_shot", "base_few_shot", "tuned"}
        assert report["systems"]["tuned"]["n_generated"] == 3
        assert {check["name"] for check in report["verdict"]["checks"]} == {
            "tuned_beats_best_baseline_exact_match",
            "ood_loss_increase_within_limit",
        }
        assert report["ood_probe"]["tokens_scored"] > 0
        (evaluated,) = events.of(EvaluationEvent)
        assert evaluated.verdict == report["verdict"]
        assert result.merged_check["agrees"]

        card = (artifact_dir / "MODEL_CARD.md").read_text()
        for fact in (
            result.base_model_sha256,
            result.data_files[0]["sha256"],
            result.adapter_sha256,
            "Limitations",
        ):
            assert fact in card

        base = load_base_model(tiny_model_dir)
        tuned = PeftModel.from_pretrained(base.model, artifact_dir / "adapter")
        ids = torch.tensor([[1, 85, 348, 86, 71, 79, 201]])
        merged_model = AutoModelForCausalLM.from_pretrained(
            artifact_dir / "merged", local_files_only=True
        )
        with torch.no_grad():
            torch.testing.assert_close(
                merged_model(ids).logits, tuned(ids).logits, rtol=0, atol=1e-4
            )


class TestIsolation:
    def test_trainer_never_imports_the_gateway_audit_or_policies(self):
        code = (
            "import sys, trainer.recipe, trainer.base_models, trainer.evaluate, trainer.artifacts,"
            " trainer.fixtures, trainer.parallel, trainer.__main__;"
            "bad = sorted(m for m in sys.modules"
            " if m.split('.')[0] in {'gateway', 'audit', 'policies'});"
            "print(bad); sys.exit(1 if bad else 0)"
        )
        completed = subprocess.run(  # noqa: S603 - our own interpreter and code
            [sys.executable, "-c", code], capture_output=True, text=True, check=False
        )
        assert completed.returncode == 0, completed.stdout + completed.stderr
