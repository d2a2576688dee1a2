"""Events and results cross process boundaries (worker processes, Ray tasks and Ray Train
workers): each must pickle back to itself, and its dict form keep the old shape."""

from __future__ import annotations

import pickle

import pytest

from trainer.results import (
    CheckpointEvent,
    CheckpointInfo,
    EarlyStoppedEvent,
    EpochEvent,
    EvaluationEvent,
    RunCancelledEvent,
    RunPausedEvent,
    RunStartedEvent,
    RunSucceededEvent,
    StepEvent,
    TrainEvent,
    TrainResult,
    ValidationEvent,
)

EVENTS = [
    RunStartedEvent(
        0,
        total_steps=5,
        device="cpu",
        train_examples=40,
        held_out_examples=6,
        resolved_hyperparameters={"batch_size": 8},
    ),
    StepEvent(
        1,
        total_steps=5,
        epoch=0.2,
        loss=2.5,
        learning_rate=1e-4,
        grad_norm=0.7,
        tokens_per_second=900.0,
        step_tokens=1200,
        trained_tokens=300,
        processed_tokens=1200,
        seconds_remaining=4.0,
        estimated_finish="2026-01-01T00:00:04+00:00",
    ),
    EpochEvent(5, epoch=1),
    ValidationEvent(5, validation_loss=2.1, best_validation_loss=2.1, improved=True),
    CheckpointEvent(
        4,
        path="/runs/x/checkpoints/step-000004",
        adapter_sha256="a" * 64,
        metrics={"train_loss": 2.5, "valid_loss": None},
    ),
    EarlyStoppedEvent(5, best_step=3),
    EvaluationEvent(5, systems={"tuned": {}}, ood_probe={"loss_before": 1.0}, verdict={}),
    RunCancelledEvent(2),
    RunPausedEvent(3),
    RunSucceededEvent(5, adapter_sha256="b" * 64, artifact_dir="/runs/x/model", files=7),
]


def _round_trip(value: object) -> object:
    return pickle.loads(pickle.dumps(value))  # noqa: S301 - bytes we just wrote


@pytest.mark.parametrize("event", EVENTS, ids=lambda event: event.type)
def test_every_event_pickles_and_keeps_its_dict_shape(event: TrainEvent):
    assert _round_trip(event) == event
    record = event.to_dict()
    assert set(record) == {"type", "step", "data"} and record["step"] == event.step
    assert record["type"] == type(event).type != TrainEvent.type
    assert "step" not in record["data"]


def test_the_kinds_have_distinct_names():
    assert len({type(event).type for event in EVENTS}) == len(EVENTS)


def test_a_result_pickles():
    result = TrainResult(
        status="succeeded",
        steps_completed=5,
        total_steps=5,
        base_model_sha256="c" * 64,
        data_files=[],
        resolved_config={},
        trained_tokens=300,
        processed_tokens=1200,
        seconds=1.5,
        device="cpu",
        checkpoints=[CheckpointInfo(step=4, path="/p", adapter_sha256="a" * 64)],
    )
    assert _round_trip(result) == result
