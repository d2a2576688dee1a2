"""The evaluation a re-evaluation runs: the trainer's own, on the registered adapter.

The job's recorded TrainSpec is set up again the way the trainer set it up (the same base
model, data, held-out split and seed, so the same held-out set, few-shot pool and OOD
probe), with the registered adapter loaded in place of a fresh one (the way a job that
continues a parent model loads it), and handed to ``trainer.recipe.evaluate``: the same
three systems, metrics and verdict as at the end of training. Nothing is trained and
nothing is written but a scratch directory.
"""

from __future__ import annotations

import dataclasses
import math
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from trainer.spec import TrainSpec

# What the trainer's evaluation calls check_stop for, beside each generation batch: the
# scoring passes (three systems and the OOD probe twice).
SCORING_PASSES = 5


def evaluate_adapter(
    spec: Mapping[str, Any],
    adapter_dir: Path,
    *,
    progress: Callable[[float], None],
    check_stop: Callable[[], None],
) -> dict[str, Any]:
    # Here, not at the top: the recipe loads torch, which only a running evaluation pays for.
    from trainer import recipe

    base = TrainSpec.from_dict(dict(spec))
    with tempfile.TemporaryDirectory(prefix="tunegate-reeval-") as scratch:
        again = dataclasses.replace(
            base,
            output_dir=scratch,
            init_adapter_dir=str(adapter_dir),
            resume_from_checkpoint=None,
            evaluation=dataclasses.replace(base.evaluation, enabled=True),
        )
        run = recipe.setup(again)
        generated = len(run.data.held_out)
        if again.evaluation.max_generation_examples is not None:
            generated = min(generated, again.evaluation.max_generation_examples)
        batches = 3 * math.ceil(generated / again.evaluation.generation_batch_size)
        expected = max(1, SCORING_PASSES + batches)
        calls = 0

        def counted() -> None:
            nonlocal calls
            check_stop()
            calls += 1
            progress(min(calls / expected, 1.0))

        return recipe.evaluate(run, lambda _event: None, counted)
