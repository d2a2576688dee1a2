from __future__ import annotations

import dataclasses

import pytest

from trainer.spec import (
    EvalSpec,
    Hyperparameters,
    LoraSpec,
    TrainSpec,
    resolve_hyperparameters,
)


def _spec(**overrides) -> TrainSpec:
    return TrainSpec(base_model_dir="m", training_file="t.jsonl", output_dir="o", **overrides)


class TestResolveHyperparameters:
    def test_auto_on_the_demo_size(self):
        resolved = resolve_hyperparameters(
            Hyperparameters(), n_training_examples=500, base_learning_rate=2e-4
        )
        assert (resolved.n_epochs, resolved.batch_size, resolved.learning_rate_multiplier) == (
            3,
            8,
            1.0,
        )
        assert resolved.learning_rate == pytest.approx(2e-4)
        assert all(reason.startswith("auto") for reason in resolved.decided_by.values())

    def test_auto_clamps_small_and_large_sets(self):
        small = resolve_hyperparameters(
            Hyperparameters(), n_training_examples=20, base_learning_rate=1e-4
        )
        large = resolve_hyperparameters(
            Hyperparameters(), n_training_examples=100_000, base_learning_rate=1e-4
        )
        assert (small.n_epochs, small.batch_size) == (10, 1)
        assert small.learning_rate_multiplier == 0.5
        assert (large.n_epochs, large.batch_size) == (1, 32)
        assert large.learning_rate_multiplier == 2.0

    def test_given_values_pass_through(self):
        resolved = resolve_hyperparameters(
            Hyperparameters(n_epochs=4, batch_size=3, learning_rate_multiplier=0.3),
            n_training_examples=500,
            base_learning_rate=1e-3,
        )
        assert (resolved.n_epochs, resolved.batch_size) == (4, 3)
        assert resolved.learning_rate == pytest.approx(3e-4)
        assert set(resolved.decided_by.values()) == {"given"}

    def test_empty_training_set_is_refused(self):
        with pytest.raises(ValueError):
            resolve_hyperparameters(
                Hyperparameters(), n_training_examples=0, base_learning_rate=1e-4
            )


class TestValidation:
    @pytest.mark.parametrize(
        "hyperparameters",
        [
            {"n_epochs": 0},
            {"batch_size": "big"},
            {"learning_rate_multiplier": -1},
            {"n_epochs": True},
        ],
    )
    def test_bad_hyperparameters_are_refused(self, hyperparameters):
        with pytest.raises(ValueError):
            Hyperparameters(**hyperparameters)

    @pytest.mark.parametrize(
        "overrides",
        [
            {"lr_scheduler": "step"},
            {"device": "tpu"},
            {"warmup_ratio": 1.0},
            {"max_seq_len": 8192, "micro_batch_tokens": 4096},
            {"checkpoint_every_steps": 0},
        ],
    )
    def test_bad_train_spec_is_refused(self, overrides):
        with pytest.raises(ValueError):
            _spec(**overrides)

    def test_bad_lora_and_eval_are_refused(self):
        with pytest.raises(ValueError):
            LoraSpec(r=0)
        with pytest.raises(ValueError):
            EvalSpec(held_out_fraction=1.0)


class TestSerialisation:
    def test_round_trip_through_plain_dicts(self):
        spec = _spec(
            hyperparameters=Hyperparameters(n_epochs=2),
            lora=LoraSpec(r=4, target_modules=["q_proj"], use_dora=True),
            evaluation=EvalSpec(few_shot_examples=5),
        )
        assert TrainSpec.from_dict(spec.to_dict()) == spec

    def test_unknown_fields_are_refused(self):
        data = _spec().to_dict() | {"n_gpus": 8}
        with pytest.raises(ValueError, match="n_gpus"):
            TrainSpec.from_dict(data)

    def test_every_field_has_help_text(self):
        for kind in (TrainSpec, LoraSpec, EvalSpec, Hyperparameters):
            for spec_field in dataclasses.fields(kind):
                assert spec_field.metadata.get("help"), f"{kind.__name__}.{spec_field.name}"
