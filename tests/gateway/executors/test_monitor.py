"""The worker's translation of trainer events into OpenAI job events, and what importing
the executors costs the gateway (no torch)."""

from __future__ import annotations

import math
import subprocess
import sys

from gateway.executors.monitor import translate
from tests.trainer.test_results import EVENTS
from trainer.results import CheckpointEvent, StepEvent, TrainEvent, ValidationEvent


def _translated() -> dict[str, object]:
    latest: dict[str, object] = {}
    return {type(event).type: translate(event, latest) for event in EVENTS}


class TestTranslate:
    def test_every_kind_has_its_own_message(self):
        pending = _translated()
        assert pending["train.step"].type == "metrics"
        assert pending["train.step"].message == "Step 1/5: training loss=2.5000"
        assert pending["train.step"].data["train_loss"] == 2.5
        assert pending["train.validation"].message == "Step 5: validation loss=2.1000"
        assert pending["run.started"].message == "Training started: 5 steps on cpu"
        assert pending["train.epoch_completed"].message == "Epoch 1 completed"
        assert pending["train.early_stopped"].data == {"step": 5, "best_step": 3}
        assert pending["evaluation.completed"].type == "metrics"
        assert pending["run.cancelled"].message == "Training stopped at step 2"
        assert pending["run.paused"].message == "Training paused at step 3"
        assert pending["run.succeeded"].data["adapter_sha256"] == "b" * 64
        assert all(item.level == "info" for item in pending.values())

    def test_a_checkpoint_carries_openais_metrics(self):
        checkpoint = next(e for e in EVENTS if isinstance(e, CheckpointEvent))
        pending = translate(checkpoint, {})
        assert pending.checkpoint["metrics"] == {
            "step": 4,
            "train_loss": 2.5,
            "train_mean_token_accuracy": None,
            "valid_loss": None,
            "valid_mean_token_accuracy": None,
            "full_valid_loss": None,
            "full_valid_mean_token_accuracy": None,
        }
        assert pending.checkpoint["adapter_sha256"] == checkpoint.adapter_sha256

    def test_a_checkpoint_without_metrics_carries_the_latest_losses(self):
        step, validation = (
            next(e for e in EVENTS if isinstance(e, kind)) for kind in (StepEvent, ValidationEvent)
        )
        latest: dict[str, object] = {}
        translate(step, latest)
        translate(validation, latest)
        bare = CheckpointEvent(4, path="/runs/x/checkpoints/step-000004", adapter_sha256="a" * 64)
        metrics = translate(bare, latest).checkpoint["metrics"]
        assert (metrics["step"], metrics["train_loss"], metrics["valid_loss"]) == (4, 2.5, 2.1)

    def test_a_diverged_loss_is_recorded_as_null(self):
        step = next(e for e in EVENTS if isinstance(e, StepEvent))
        nan = StepEvent(**{**step.to_dict()["data"], "step": 1, "loss": math.nan})
        pending = translate(nan, {})
        assert pending.data["train_loss"] is None and pending.message.endswith("loss=nan")

    def test_a_resumed_run_says_where_it_resumed(self):
        started = EVENTS[0]
        resumed = type(started)(**{**started.to_dict()["data"], "step": 3})
        assert translate(resumed, {}).message == "Training resumed at step 3 of 5 steps on cpu"

    def test_an_unknown_kind_is_a_plain_message(self):
        assert translate(TrainEvent(2), {}).message == "train.event"


def test_importing_the_executors_loads_no_torch():
    code = (
        "import sys, gateway.executors, gateway.executors.run, gateway.executors.ray;"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in {'torch', 'transformers'});"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    completed = subprocess.run(  # noqa: S603 - our own interpreter and code
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr


def test_a_running_job_reports_its_tokens_and_estimated_finish(world):
    """Each step's progress reaches the job row on the monitor's next tick: OpenAI's
    trained_tokens (every token), the target tokens beside it, and estimated_finish."""
    import time

    from gateway.executors.monitor import JobMonitor

    job_id = world.add_job(
        job_overrides={
            "status": "running",
            "lease_owner": "w-1",
            "lease_expires_at": time.time() + 60,
        }
    )
    monitor = JobMonitor(
        world.engine, job_id=job_id, worker_id="w-1", lease_seconds=60, heartbeat_seconds=30
    )
    step = next(e for e in EVENTS if isinstance(e, StepEvent))
    before = int(time.time())
    for remaining, processed in ((400.0, 1200), (100.0, 2400)):
        fields = {"seconds_remaining": remaining, "processed_tokens": processed}
        monitor.on_event(StepEvent(**{**step.to_dict()["data"], "step": 1, **fields}))
        monitor.tick()
        job = world.job(job_id)
        assert before + remaining <= job.estimated_finish <= time.time() + remaining + 1
        assert (job.trained_tokens, job.trained_target_tokens) == (processed, step.trained_tokens)
