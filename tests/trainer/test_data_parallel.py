"""The recipe's data-parallel path, without Ray: two processes (torch.multiprocessing spawn)
in a gloo process group train the tiny model and end where one process ends."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file

from trainer.checkpoints import ADAPTER_WEIGHTS
from trainer.hashing import sha256_file
from trainer.recipe import ARTIFACT_DIR_NAME, CHECKPOINT_DIR_NAME, train
from trainer.results import StepEvent
from trainer.spec import EvalSpec, Hyperparameters, TrainSpec

WORLD_SIZE = 2


def _rank_main(
    rank: int, init_file: str, spec: dict[str, Any], out_dir: str, stop_at: int, pause: bool
) -> None:
    """One rank: join the group, train, write what it saw. Rank 0 stops (or, with `pause`,
    pauses) after `stop_at` steps when that is > 0, the way a cancel or a pause reaches it."""
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD_SIZE
    )
    try:
        events: list[Any] = []

        def should_stop() -> bool:
            return stop_at > 0 and sum(isinstance(e, StepEvent) for e in events) >= stop_at

        result = train(
            TrainSpec.from_dict(spec),
            on_event=events.append,
            should_stop=None if pause else should_stop,
            should_pause=should_stop if pause else None,
        )
        record = {"result": result.to_dict(), "events": [e.to_dict() for e in events]}
        Path(out_dir, f"rank-{rank}.json").write_text(json.dumps(record, default=str))
    finally:
        dist.destroy_process_group()


def _run_data_parallel(
    tmp_path: Path, spec: TrainSpec, *, stop_at: int = 0, pause: bool = False
) -> list[dict]:
    out = tmp_path / f"ranks-{stop_at}"
    out.mkdir()
    mp.spawn(
        _rank_main,
        args=(str(tmp_path / f"pg-{stop_at}"), spec.to_dict(), str(out), stop_at, pause),
        nprocs=WORLD_SIZE,
        join=True,
    )
    return [json.loads((out / f"rank-{rank}.json").read_text()) for rank in range(WORLD_SIZE)]


def _spec(make_spec, **overrides) -> TrainSpec:
    # 40 examples, batches of 8: 5 steps, each rank training 4 examples a step.
    fields = {
        "hyperparameters": Hyperparameters(n_epochs=1, batch_size=8, learning_rate_multiplier=10),
        "checkpoint_every_steps": 2,
    }
    fields.update(overrides)
    return make_spec(**fields)


def test_two_ranks_train_disjoint_shards_and_match_one_process(make_spec, tmp_path):
    evaluation = EvalSpec(max_generation_examples=2, max_new_tokens=4, generation_batch_size=1)
    parallel_spec = _spec(make_spec, evaluation=evaluation)
    leader, follower = _run_data_parallel(tmp_path, parallel_spec)
    single_events: list[Any] = []
    single = train(_spec(make_spec, evaluation=evaluation), on_event=single_events.append)

    result = leader["result"]
    assert result["status"] == "succeeded" == single.status
    assert result["steps_completed"] == single.steps_completed == 5
    assert set(result) == set(single.to_dict())
    assert result["trained_tokens"] == single.trained_tokens
    assert result["processed_tokens"] == single.processed_tokens

    # Each rank trained on its own half of every batch: 4 of 8 examples a step.
    data_parallel = result["resolved_config"]["data_parallel"]
    assert data_parallel["world_size"] == 2 and data_parallel["backend"] == "gloo"
    assert data_parallel["examples_per_rank"] == [20, 20]
    assert sum(data_parallel["target_tokens_per_rank"]) == single.trained_tokens
    assert all(tokens > 0 for tokens in data_parallel["target_tokens_per_rank"])
    assert "data_parallel" not in single.resolved_config

    # Summed gradients: the step two ranks take is the step one process takes.
    parallel_losses = [e["data"]["loss"] for e in leader["events"] if e["type"] == "train.step"]
    single_losses = [e.loss for e in single_events if isinstance(e, StepEvent)]
    assert parallel_losses == pytest.approx(single_losses, rel=1e-4)
    artifact_dir = Path(result["artifact_dir"])
    assert artifact_dir == Path(parallel_spec.output_dir) / ARTIFACT_DIR_NAME
    parallel_adapter = load_file(artifact_dir / "adapter" / ADAPTER_WEIGHTS)
    single_adapter = load_file(Path(single.artifact_dir) / "adapter" / ADAPTER_WEIGHTS)
    assert parallel_adapter.keys() == single_adapter.keys()
    for name, tensor in single_adapter.items():
        assert torch.allclose(parallel_adapter[name], tensor, rtol=1e-3, atol=1e-5), name
    assert result["adapter_sha256"] == sha256_file(artifact_dir / "adapter" / ADAPTER_WEIGHTS)
    assert sorted(f["relative_path"] for f in result["files"]) == sorted(
        f.relative_path for f in single.files
    )

    # Rank 0 alone wrote checkpoints and artifacts and reported; rank 1 only trained.
    assert [c["step"] for c in result["checkpoints"]] == [2, 4]
    assert sorted(
        p.name for p in (Path(parallel_spec.output_dir) / CHECKPOINT_DIR_NAME).iterdir()
    ) == [
        "step-000002",
        "step-000004",
    ]
    assert [e["type"] for e in leader["events"]] == [e.type for e in single_events]
    assert "evaluation.completed" in [e["type"] for e in leader["events"]]
    assert result["evaluation"].keys() == single.evaluation.keys()
    assert follower["events"] == []
    assert follower["result"]["artifact_dir"] is None and follower["result"]["checkpoints"] == []
    assert follower["result"]["resolved_config"]["data_parallel"] == data_parallel


def test_a_stop_on_rank_0_stops_every_rank_at_the_same_step(make_spec, tmp_path):
    spec = _spec(make_spec, checkpoint_every_steps=None)
    leader, follower = _run_data_parallel(tmp_path, spec, stop_at=2)
    assert leader["result"]["status"] == follower["result"]["status"] == "cancelled"
    assert leader["result"]["steps_completed"] == follower["result"]["steps_completed"] == 2
    assert leader["events"][-1]["type"] == "run.cancelled"
    assert not (Path(spec.output_dir) / ARTIFACT_DIR_NAME).exists()


def test_a_pause_on_rank_0_pauses_every_rank_after_rank_0s_checkpoint(make_spec, tmp_path):
    spec = _spec(make_spec, checkpoint_every_steps=None)
    leader, follower = _run_data_parallel(tmp_path, spec, stop_at=2, pause=True)
    assert leader["result"]["status"] == follower["result"]["status"] == "paused"
    assert leader["result"]["steps_completed"] == follower["result"]["steps_completed"] == 2
    assert [c["step"] for c in leader["result"]["checkpoints"]] == [2]
    assert follower["result"]["checkpoints"] == []
    assert leader["events"][-1]["type"] == "run.paused"
    assert (Path(spec.output_dir) / CHECKPOINT_DIR_NAME / "step-000002").is_dir()
