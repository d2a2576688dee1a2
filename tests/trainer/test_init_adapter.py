"""Iterative improvement: a run may start from a parent run's adapter instead of a fresh one."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from trainer.checkpoints import ADAPTER_WEIGHTS, AdapterMismatchError, adapter_state
from trainer.recipe import setup, train
from trainer.spec import LoraSpec


@pytest.fixture(scope="module")
def parent_artifacts(tiny_model_dir, demo_files, tmp_path_factory) -> Path:
    from trainer.spec import EvalSpec, Hyperparameters, TrainSpec

    train_path, validation_path = demo_files
    spec = TrainSpec(
        base_model_dir=str(tiny_model_dir),
        training_file=str(train_path),
        validation_file=str(validation_path),
        output_dir=str(tmp_path_factory.mktemp("parent")),
        hyperparameters=Hyperparameters(n_epochs=1, batch_size=8, learning_rate_multiplier=10),
        evaluation=EvalSpec(enabled=False),
        lora=LoraSpec(r=4, alpha=8),
        max_steps=2,
        seed=7,
    )
    result = train(spec)
    assert result.status == "succeeded"
    return Path(result.artifact_dir)


class TestInitAdapter:
    def test_child_starts_from_the_parent_weights(self, make_spec, parent_artifacts):
        parent = load_file(parent_artifacts / "adapter" / ADAPTER_WEIGHTS)
        run = setup(make_spec(lora=LoraSpec(r=4, alpha=8), init_adapter_dir=str(parent_artifacts)))
        child = adapter_state(run.model.peft)
        assert child.keys() == parent.keys()
        assert all(torch.equal(child[name], parent[name]) for name in parent)
        # A fresh adapter starts with lora_B at zero; the parent's has moved.
        assert any("lora_B" in name and parent[name].abs().sum() > 0 for name in parent)

    def test_adapter_dir_itself_is_accepted(self, make_spec, parent_artifacts):
        parent = load_file(parent_artifacts / "adapter" / ADAPTER_WEIGHTS)
        run = setup(
            make_spec(
                lora=LoraSpec(r=4, alpha=8), init_adapter_dir=str(parent_artifacts / "adapter")
            )
        )
        child = adapter_state(run.model.peft)
        assert all(torch.equal(child[name], parent[name]) for name in parent)

    def test_child_trains_on(self, make_spec, parent_artifacts):
        result = train(
            make_spec(
                lora=LoraSpec(r=4, alpha=8), init_adapter_dir=str(parent_artifacts), max_steps=1
            )
        )
        assert result.status == "succeeded"
        assert result.resolved_config["spec"]["init_adapter_dir"] == str(parent_artifacts)

    @pytest.mark.parametrize(
        ("lora", "field"),
        [
            (LoraSpec(r=8, alpha=8), "r"),
            (LoraSpec(r=4, alpha=16), "lora_alpha"),
            (LoraSpec(r=4, alpha=8, target_modules=["q_proj", "v_proj"]), "target_modules"),
        ],
    )
    def test_different_lora_config_is_refused(self, make_spec, parent_artifacts, lora, field):
        with pytest.raises(AdapterMismatchError, match=field):
            setup(make_spec(lora=lora, init_adapter_dir=str(parent_artifacts)))

    def test_missing_adapter_is_refused(self, make_spec, tmp_path):
        with pytest.raises(FileNotFoundError, match="adapter_config.json"):
            setup(make_spec(lora=LoraSpec(r=4, alpha=8), init_adapter_dir=str(tmp_path)))
