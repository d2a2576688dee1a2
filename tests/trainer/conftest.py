"""Fixtures for the trainer: a tiny random Llama base model and demo-task data, built once."""

from __future__ import annotations

import os

# Nothing in these tests may reach a model hub; set before transformers reads it.
os.environ["HF_HUB_OFFLINE"] = "1"

from pathlib import Path

import pytest
import torch

from trainer.demo_task import write_demo_files
from trainer.fixtures import build_tiny_model
from trainer.spec import EvalSpec, Hyperparameters, TrainSpec

# The tiny model's ops are far too small to share between threads; on a busy 2-core machine a
# second thread makes each step ~10x slower while it waits for a core.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("base") / "tiny-llama"
    build_tiny_model(directory, seed=0)
    return directory


@pytest.fixture(scope="session")
def demo_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return write_demo_files(tmp_path_factory.mktemp("demo"), n_train=40, n_validation=6, seed=11)


@pytest.fixture
def make_spec(tiny_model_dir: Path, demo_files: tuple[Path, Path], tmp_path: Path):
    """A small, fast spec on the tiny model; keyword arguments override its fields."""
    counter = iter(range(1000))

    def build(**overrides) -> TrainSpec:
        train_path, validation_path = demo_files
        fields = {
            "base_model_dir": str(tiny_model_dir),
            "training_file": str(train_path),
            "validation_file": str(validation_path),
            "output_dir": str(tmp_path / f"run-{next(counter)}"),
            "hyperparameters": Hyperparameters(
                n_epochs=1, batch_size=8, learning_rate_multiplier=10
            ),
            "evaluation": EvalSpec(enabled=False),
            "seed": 7,
        }
        fields.update(overrides)
        return TrainSpec(**fields)

    return build
