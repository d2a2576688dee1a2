"""The trainer's command line: base models and the demo task.

python -m trainer import-smollm2 DIR          # the demo base model, imported once
python -m trainer import-gguf FILE DIR        # any GGUF file, imported once
python -m trainer verify DIR                  # a base model against its manifest
python -m trainer tiny DIR [--seed N]         # a tiny random Llama (tests, quick demo)
python -m trainer demo-task write OUT_DIR     # the invoice task's JSONL files
python -m trainer demo-task run BASE OUT_DIR  # fine-tune on it, print the three scores
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from trainer.base_models import Manifest, import_gguf, import_smollm2, verify_manifest
from trainer.demo_task import demo_spec, write_demo_files
from trainer.fixtures import build_tiny_model
from trainer.recipe import train
from trainer.results import EvaluationEvent, StepEvent, TrainEvent, ValidationEvent


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m trainer")
    commands = parser.add_subparsers(dest="command", required=True)
    smollm2 = commands.add_parser("import-smollm2", help="import the demo base model once")
    smollm2.add_argument("target")
    gguf = commands.add_parser("import-gguf", help="import a GGUF file once")
    gguf.add_argument("gguf")
    gguf.add_argument("target")
    verify = commands.add_parser("verify", help="check a base model directory against its manifest")
    verify.add_argument("target")
    tiny = commands.add_parser("tiny", help="build a tiny random Llama base model")
    tiny.add_argument("target")
    tiny.add_argument("--seed", type=int, default=0)

    demo = commands.add_parser("demo-task", help="the invoice-extraction demo task")
    demo_commands = demo.add_subparsers(dest="demo_command", required=True)
    write = demo_commands.add_parser("write", help="write the demo training and held-out files")
    write.add_argument("out_dir")
    write.add_argument("--train", type=int, default=500)
    write.add_argument("--validation", type=int, default=50)
    write.add_argument("--seed", type=int, default=2024)
    run = demo_commands.add_parser("run", help="fine-tune a base model on the demo task")
    run.add_argument("base_model_dir")
    run.add_argument("out_dir")
    run.add_argument("--epochs", type=int, default=1)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    if args.command == "demo-task":
        if args.demo_command == "write":
            _write_demo_files(args)
        else:
            _run_demo_task(args)
        return
    manifest: Manifest
    if args.command == "import-smollm2":
        manifest = import_smollm2(args.target)
    elif args.command == "import-gguf":
        manifest = import_gguf(args.gguf, args.target)
    elif args.command == "verify":
        manifest = verify_manifest(args.target)
    else:
        manifest = build_tiny_model(args.target, seed=args.seed)
    print(json.dumps({"path": args.target, "manifest_sha256": manifest.manifest_sha256}))


def _write_demo_files(args: argparse.Namespace) -> None:
    train_path, validation_path = write_demo_files(
        args.out_dir, n_train=args.train, n_validation=args.validation, seed=args.seed
    )
    print(json.dumps({"train": str(train_path), "validation": str(validation_path)}))


def _print_progress(event: TrainEvent) -> None:
    if isinstance(event, StepEvent | ValidationEvent | EvaluationEvent):
        record = event.to_dict()
        line = json.dumps(
            {"type": record["type"], "step": record["step"], **record["data"]}, default=str
        )
        print(line[:400], flush=True)


def _run_demo_task(args: argparse.Namespace) -> None:
    spec = demo_spec(args.base_model_dir, args.out_dir, n_epochs=args.epochs)
    result = train(spec, _print_progress)
    report = result.evaluation
    assert report is not None  # the demo spec evaluates
    zero, few, tuned = (
        report["systems"][name] for name in ("base_zero_shot", "base_few_shot", "tuned")
    )
    label = f"demo[{Path(args.base_model_dir).name}]"
    print(
        f"{label} exact match on {tuned['n_generated']} held-out invoices: base zero-shot "
        f"{zero['exact_match']:.2f} | base few-shot {few['exact_match']:.2f} | "
        f"tuned {tuned['exact_match']:.2f}"
    )
    print(
        f"{label} token F1: base zero-shot {zero['token_f1']:.2f} | base few-shot "
        f"{few['token_f1']:.2f} | tuned {tuned['token_f1']:.2f}; OOD loss change "
        f"{report['ood_probe']['relative_change']:+.1%}; verdict "
        f"{'PASSED' if report['verdict']['passed'] else 'FAILED'}; adapter {result.adapter_sha256}"
    )


if __name__ == "__main__":
    main()
