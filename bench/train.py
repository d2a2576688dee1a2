"""Training benchmark: our LoRA loop beside transformers.Trainer + peft with dynamic padding.

Both train the same base model on the same variable-length chat data (lengths drawn from a
log-normal, like real chat turns) for one epoch, with the same LoRA config, batch size,
learning rate and schedule, warm-up, clipping and seed. In one run it prints:

1. real (non-padding) tokens per second of each, and the ratio (goal >= 1.5 on the CPU);
2. the final validation loss of each, scored by the same function (goal: ours within 2%);
3. the FLOP/s our loop achieves beside a matmul peak measured in the same run (goal >= 40%).

FLOPs count the work the training needs, the same for both loops: per token 4x the frozen
linear weights (forward, and the backward to the activations), 6x the LoRA weights (they
also get weight gradients), the output projection only where a target exists, and causal
attention within each example (forward QK^T and AV, backward twice that).

    python bench/train.py cpu --model tiny-30m   # generated ~30M-parameter Llama
    python bench/train.py cpu --model smollm2    # imported SmolLM2-135M-Instruct
    python bench/train.py gpu --model smollm2-shape --steps 30   # see bench/gpu_check.sh

`--dpo` prints the DPO row instead: our DPO (trainer.dpo) beside TRL's DPOTrainer (the
`bench` extra: pip install -e '.[bench]') on the same model, preference data, LoRA config,
batch size, learning rate and schedule, beta and seed, both with the base model (adapter
disabled) as the reference: real tokens per second (goal >= 1.5x) and the final
preference accuracy on the validation pairs, scored by the same function (goal within 2
points). The preference is learnable on purpose (the reply over the same reply in capitals),
so that both accuracies mean something.

    python bench/train.py cpu --model tiny-30m --threads 1 --dpo
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from transformers import logging as transformers_logging

from trainer.base_models import MANIFEST_NAME, import_smollm2, load_base_model, verify_manifest
from trainer.data import IGNORE_INDEX, tokenize_file, tokenize_preference_file
from trainer.dpo import ReferenceLogps, score_pairs
from trainer.evaluate import OOD_TEXT_PATH, mean_target_loss
from trainer.fixtures import TinyModelShape, build_tiny_model
from trainer.modeling import use_segmented_attention
from trainer.recipe import train
from trainer.results import RunStartedEvent, StepEvent, TrainEvent, ValidationEvent
from trainer.spec import DpoSpec, EvalSpec, Hyperparameters, LoraSpec, TrainSpec

SHAPES = {
    # ~30M parameters with its own small vocabulary.
    "tiny-30m": TinyModelShape(
        hidden_size=512,
        num_layers=10,
        num_heads=8,
        num_kv_heads=4,
        intermediate_size=1408,
        tokenizer_vocab_size=4096,
    ),
    # SmolLM2-135M's exact shape, random weights: same speed, no 98 MB download to carry.
    "smollm2-shape": TinyModelShape(
        hidden_size=576,
        num_layers=30,
        num_heads=9,
        num_kv_heads=3,
        intermediate_size=1536,
        tokenizer_vocab_size=4096,
        model_vocab_size=49152,
        max_position_embeddings=8192,
    ),
    # A TinyLlama-1.1B-shaped model for the GPU check.
    "llama-1b": TinyModelShape(
        hidden_size=2048,
        num_layers=22,
        num_heads=32,
        num_kv_heads=4,
        intermediate_size=5632,
        tokenizer_vocab_size=4096,
        model_vocab_size=32000,
        max_position_embeddings=8192,
    ),
}
H200_BF16_DENSE_PEAK = 989e12
SEED = 1234


def synthetic_chat_file(path: Path, *, count: int, seed: int, max_words: int) -> Path:
    """Chat examples whose prompt and reply lengths are log-normal, cut from general prose."""
    words = OOD_TEXT_PATH.read_text().split()
    rng = random.Random(seed)

    def span(median: float) -> str:
        length = int(min(max_words, max(3, rng.lognormvariate(math.log(median), 0.9))))
        start = rng.randrange(len(words))
        return " ".join(words[(start + i) % len(words)] for i in range(length))

    lines = []
    for _ in range(count):
        messages = [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": span(60)},
            {"role": "assistant", "content": span(45)},
        ]
        lines.append(json.dumps({"messages": messages}) + "\n")
    path.write_text("".join(lines))
    return path


def synthetic_preference_files(
    workdir: Path, *, count: int, validation_count: int, max_words: int
) -> tuple[Path, Path]:
    """Preference pairs over the synthetic chats: the reply preferred over it in capitals."""
    paths = []
    for name, size, seed in (("train", count, 1), ("validation", validation_count, 2)):
        chats = synthetic_chat_file(
            workdir / f"{name}-chat.jsonl", count=size, seed=seed, max_words=max_words
        )
        lines = []
        for line in chats.read_text().splitlines():
            messages = json.loads(line)["messages"]
            reply = messages[-1]["content"]
            record = {
                "input": {"messages": messages[:-1]},
                "preferred_output": [{"role": "assistant", "content": reply}],
                "non_preferred_output": [{"role": "assistant", "content": reply.upper()}],
            }
            lines.append(json.dumps(record) + "\n")
        path = workdir / f"{name}-preference.jsonl"
        path.write_text("".join(lines))
        paths.append(path)
    return paths[0], paths[1]


def prepare_base_model(name: str, workdir: Path, existing: str | None = None) -> Path:
    directory = Path(existing) if existing else workdir / name
    if (directory / MANIFEST_NAME).exists():
        verify_manifest(directory)
    elif name == "smollm2":
        import_smollm2(directory)
    else:
        build_tiny_model(directory, shape=SHAPES[name], seed=SEED)
    return directory


def training_flops(model_dir: Path, lora: LoraSpec, train_file: Path, max_seq_len: int) -> float:
    """FLOPs one epoch needs (see the module docstring); identical for both loops."""
    loaded = load_base_model(model_dir)
    model, config = loaded.model, loaded.model.config
    # No target_modules: peft's "all-linear", every linear layer but the output head.
    targets = set(lora.target_modules) if lora.target_modules else None
    head = model.get_output_embeddings()
    frozen = lora_params = 0
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and module is not head:
            frozen += module.weight.numel()
            if targets is None or name.rsplit(".", 1)[-1] in targets:
                lora_params += lora.r * (module.in_features + module.out_features)
    attention_width = config.num_attention_heads * (
        config.hidden_size // config.num_attention_heads
    )
    examples = tokenize_file(train_file, loaded.tokenizer, max_seq_len=max_seq_len).examples
    tokens = sum(e.n_tokens for e in examples)
    target_tokens = sum(e.n_target_tokens for e in examples)
    squared_lengths = sum(e.n_tokens**2 for e in examples)
    return (
        tokens * (4 * frozen + 6 * lora_params)
        + target_tokens * 4 * head.weight.numel()
        + config.num_hidden_layers * 6 * attention_width * squared_lengths
    )


def matmul_peak(dtype: torch.dtype, device: torch.device) -> float:
    """Best FLOP/s of square and training-shaped matmuls, measured now on this device."""
    best = 0.0
    for m, k, n in ((2048, 2048, 2048), (4096, 576, 1536), (4096, 1536, 576), (4096, 512, 1408)):
        a = torch.randn(m, k, dtype=dtype, device=device)
        b = torch.randn(k, n, dtype=dtype, device=device)
        for _ in range(2):
            a @ b
        repeats = 10
        if device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        for _ in range(repeats):
            a @ b
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = max(best, 2 * m * k * n * repeats / (time.perf_counter() - started))
    return best


def base_spec(
    model_dir: Path, train_file: Path, validation_file: Path, out: Path, args
) -> TrainSpec:
    return TrainSpec(
        base_model_dir=str(model_dir),
        training_file=str(train_file),
        validation_file=str(validation_file),
        output_dir=str(out),
        hyperparameters=Hyperparameters(
            n_epochs=1, batch_size=args.batch_size, learning_rate_multiplier=1
        ),
        lora=LoraSpec(r=16, alpha=32),
        evaluation=EvalSpec(enabled=False),
        seed=SEED,
        base_learning_rate=args.learning_rate,
        max_seq_len=args.max_seq_len,
        micro_batch_tokens=args.micro_batch_tokens,
    )


def run_ours(spec: TrainSpec) -> dict:
    clock: dict[str, float] = {}
    validation: list[float] = []
    step_rates: list[float] = []

    def on_event(event: TrainEvent) -> None:
        match event:
            case RunStartedEvent():
                clock["start"] = time.perf_counter()
            case StepEvent():
                clock["end"] = time.perf_counter()
                step_rates.append(event.tokens_per_second)
            case ValidationEvent():
                validation.append(event.validation_loss)

    result = train(spec, on_event)
    return {
        "tokens": result.processed_tokens,
        "seconds": clock["end"] - clock["start"],
        "validation_loss": validation[-1],
        "steps": result.steps_completed,
        "step_rates": step_rates,
    }


def run_transformers_trainer(spec: TrainSpec, total_steps: int, warmup_steps: int) -> dict:
    """The common path: Trainer + peft, each batch padded to its longest example."""
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments

    loaded = load_base_model(spec.base_model_dir)
    tokenizer = loaded.tokenizer
    train_examples = tokenize_file(
        spec.training_file, tokenizer, max_seq_len=spec.max_seq_len
    ).examples
    features = [
        {
            "input_ids": list(e.input_ids),
            "attention_mask": [1] * e.n_tokens,
            "labels": [
                t if trained else IGNORE_INDEX
                for t, trained in zip(e.input_ids, e.trained, strict=True)
            ],
        }
        for e in train_examples
    ]
    torch.manual_seed(spec.seed)
    model = get_peft_model(
        loaded.model,
        LoraConfig(
            r=spec.lora.r,
            lora_alpha=spec.lora.alpha,
            lora_dropout=spec.lora.dropout,
            target_modules="all-linear",
            task_type=TaskType.CAUSAL_LM,
        ),
    )
    arguments = TrainingArguments(
        output_dir=str(Path(spec.output_dir) / "hf"),
        per_device_train_batch_size=spec.hyperparameters.batch_size,
        num_train_epochs=1,
        max_steps=total_steps,
        learning_rate=spec.base_learning_rate,
        lr_scheduler_type=spec.lr_scheduler,
        warmup_steps=warmup_steps,
        weight_decay=spec.weight_decay,
        max_grad_norm=spec.max_grad_norm,
        seed=spec.seed,
        logging_strategy="no",
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
        use_cpu=not torch.cuda.is_available(),
        bf16=torch.cuda.is_available(),
    )
    trainer = Trainer(
        model=model,
        args=arguments,
        train_dataset=features,
        data_collator=DataCollatorForSeq2Seq(
            tokenizer, padding="longest", label_pad_token_id=IGNORE_INDEX
        ),
    )
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    held_out = tokenize_file(spec.validation_file, tokenizer, max_seq_len=spec.max_seq_len).examples
    use_segmented_attention(model.get_base_model())
    device = next(model.parameters()).device
    validation_loss = mean_target_loss(
        model,
        held_out,
        max_tokens=spec.micro_batch_tokens,
        device=device,
        autocast_dtype=torch.bfloat16 if device.type == "cuda" else None,
    )
    return {
        "tokens": sum(e.n_tokens for e in train_examples),
        "seconds": seconds,
        "validation_loss": validation_loss,
    }


def cpu_comparison(args) -> None:
    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="bench-train-") as scratch:
        workdir = Path(args.workdir) if args.workdir else Path(scratch)
        model_dir = prepare_base_model(args.model, workdir, args.base_model)
        train_file = synthetic_chat_file(
            workdir / "train.jsonl", count=args.examples, seed=1, max_words=400
        )
        validation_file = synthetic_chat_file(
            workdir / "validation.jsonl", count=args.validation_examples, seed=2, max_words=400
        )
        spec = base_spec(
            model_dir,
            train_file,
            validation_file,
            Path(tempfile.mkdtemp(prefix="run-", dir=workdir)),
            args,
        )
        flops = training_flops(model_dir, spec.lora, train_file, spec.max_seq_len)
        peak = matmul_peak(torch.float32, torch.device("cpu"))

        ours = run_ours(spec)
        total_steps = ours["steps"]
        warmup_steps = math.ceil(spec.warmup_ratio * total_steps)
        theirs = run_transformers_trainer(spec, total_steps, warmup_steps)
        peak_after = matmul_peak(torch.float32, torch.device("cpu"))

    label = f"train[{args.model}, cpu, {args.threads} threads]"
    ours_rate = ours["tokens"] / ours["seconds"]
    theirs_rate = theirs["tokens"] / theirs["seconds"]
    loss_gap = (ours["validation_loss"] - theirs["validation_loss"]) / theirs["validation_loss"]
    ours_flops = flops / ours["seconds"]
    peak = max(peak, peak_after)
    print(
        f"{label} data: {args.examples} train / {args.validation_examples} val examples, "
        f"{ours['tokens']} real tokens, {total_steps} steps of {args.batch_size}"
    )
    print(
        f"{label} real tokens/s: ours {ours_rate:,.0f} | transformers.Trainer+peft "
        f"(dynamic padding) {theirs_rate:,.0f} | ratio {ours_rate / theirs_rate:.2f}x (goal >= 1.5)"
    )
    print(
        f"{label} final val loss: ours {ours['validation_loss']:.4f} | Trainer "
        f"{theirs['validation_loss']:.4f} | ours {loss_gap:+.2%} (goal within 2%)"
    )
    print(
        f"{label} FLOP/s: ours {ours_flops / 1e9:.1f} GFLOP/s = {ours_flops / peak:.0%} of fp32 "
        f"matmul peak {peak / 1e9:.1f} GFLOP/s (goal >= 40%); Trainer "
        f"{flops / theirs['seconds'] / 1e9:.1f} GFLOP/s of the same work"
    )


DPO_BETA = 0.1


def preference_accuracy(model, spec: TrainSpec) -> float:
    """The held-out preference accuracy of a trained peft model, as our evaluation scores it."""
    loaded_tokenizer = load_base_model(spec.base_model_dir).tokenizer
    pairs = tokenize_preference_file(
        spec.validation_file, loaded_tokenizer, max_seq_len=spec.max_seq_len
    ).pairs
    use_segmented_attention(model.get_base_model())
    device = next(model.parameters()).device
    autocast_dtype = torch.bfloat16 if device.type == "cuda" else None
    reference = ReferenceLogps(
        model, max_tokens=spec.micro_batch_tokens, device=device, autocast_dtype=autocast_dtype
    )
    return score_pairs(
        model,
        pairs,
        reference=reference,
        beta=DPO_BETA,
        max_tokens=spec.micro_batch_tokens,
        device=device,
        autocast_dtype=autocast_dtype,
    ).preference_accuracy


def run_ours_dpo(spec: TrainSpec) -> dict:
    clock: dict[str, float] = {}

    def on_event(event: TrainEvent) -> None:
        match event:
            case RunStartedEvent():
                clock["start"] = time.perf_counter()
            case StepEvent():
                clock["end"] = time.perf_counter()

    result = train(spec, on_event)
    assert result.evaluation is not None
    return {
        "tokens": result.processed_tokens,
        "seconds": clock["end"] - clock["start"],
        "steps": result.steps_completed,
        "accuracy": result.evaluation["systems"]["tuned"]["preference_accuracy"],
    }


def run_trl_dpo(spec: TrainSpec, total_steps: int, warmup_steps: int) -> dict:
    """TRL's DPOTrainer with a peft LoRA config: reference = the adapter disabled."""
    from datasets import Dataset
    from peft import LoraConfig, TaskType
    from trl import DPOConfig, DPOTrainer

    loaded = load_base_model(spec.base_model_dir)
    rows = []
    for line in Path(spec.training_file).read_text().splitlines():
        record = json.loads(line)
        rows.append(
            {
                "prompt": record["input"]["messages"],
                "chosen": record["preferred_output"],
                "rejected": record["non_preferred_output"],
            }
        )
    arguments = DPOConfig(
        output_dir=str(Path(spec.output_dir) / "trl"),
        per_device_train_batch_size=spec.hyperparameters.batch_size,
        num_train_epochs=1,
        max_steps=total_steps,
        learning_rate=spec.base_learning_rate,
        lr_scheduler_type=spec.lr_scheduler,
        warmup_steps=warmup_steps,
        weight_decay=spec.weight_decay,
        max_grad_norm=spec.max_grad_norm,
        beta=DPO_BETA,
        max_length=None,
        seed=spec.seed,
        logging_strategy="no",
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
        use_cpu=not torch.cuda.is_available(),
        bf16=torch.cuda.is_available(),
    )
    torch.manual_seed(spec.seed)
    trainer = DPOTrainer(
        model=loaded.model,
        args=arguments,
        train_dataset=Dataset.from_list(rows),
        processing_class=loaded.tokenizer,
        peft_config=LoraConfig(
            r=spec.lora.r,
            lora_alpha=spec.lora.alpha,
            lora_dropout=spec.lora.dropout,
            target_modules="all-linear",
            task_type=TaskType.CAUSAL_LM,
        ),
    )
    dataset = trainer.train_dataset
    tokens = sum(
        2 * len(r["prompt_ids"]) + len(r["chosen_ids"]) + len(r["rejected_ids"]) for r in dataset
    )
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    return {
        "tokens": tokens,
        "seconds": seconds,
        "accuracy": preference_accuracy(trainer.model, spec),
    }


def dpo_comparison(args) -> None:
    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="bench-dpo-") as scratch:
        workdir = Path(args.workdir) if args.workdir else Path(scratch)
        model_dir = prepare_base_model(args.model, workdir, args.base_model)
        train_file, validation_file = synthetic_preference_files(
            workdir,
            count=args.examples,
            validation_count=args.validation_examples,
            max_words=args.dpo_max_words,
        )
        spec = base_spec(
            model_dir,
            train_file,
            validation_file,
            Path(tempfile.mkdtemp(prefix="run-", dir=workdir)),
            args,
        )
        spec.method = "dpo"
        spec.dpo = DpoSpec(beta=DPO_BETA)
        spec.evaluation = EvalSpec(enabled=True, ood_max_tokens=512)
        ours = run_ours_dpo(spec)
        total_steps = ours["steps"]
        theirs = run_trl_dpo(spec, total_steps, math.ceil(spec.warmup_ratio * total_steps))

    label = f"dpo[{args.model}, cpu, {args.threads} threads]"
    ours_rate = ours["tokens"] / ours["seconds"]
    theirs_rate = theirs["tokens"] / theirs["seconds"]
    gap = 100 * (ours["accuracy"] - theirs["accuracy"])
    print(
        f"{label} data: {args.examples} train / {args.validation_examples} val pairs, "
        f"{ours['tokens']} real tokens (TRL's tokenisation: {theirs['tokens']}), "
        f"{total_steps} steps of {args.batch_size}, beta {DPO_BETA}"
    )
    print(
        f"{label} real tokens/s: ours {ours_rate:,.0f} | trl.DPOTrainer+peft {theirs_rate:,.0f} "
        f"| ratio {ours_rate / theirs_rate:.2f}x (goal >= 1.5)"
    )
    print(
        f"{label} final val preference accuracy: ours {ours['accuracy']:.3f} | DPOTrainer "
        f"{theirs['accuracy']:.3f} | ours {gap:+.1f} points (goal within 2)"
    )


def gpu_check(args) -> None:
    """Our loop in bf16 on CUDA for a fixed number of steps: tokens/s, peak memory, MFU."""
    if not torch.cuda.is_available():
        raise SystemExit("gpu check needs CUDA")
    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="gpu-check-"))
    model_dir = prepare_base_model(args.model, workdir, args.base_model)
    train_file = synthetic_chat_file(
        workdir / "train.jsonl", count=args.steps * args.batch_size, seed=1, max_words=600
    )
    validation_file = synthetic_chat_file(
        workdir / "validation.jsonl", count=32, seed=2, max_words=600
    )
    spec = base_spec(
        model_dir,
        train_file,
        validation_file,
        Path(tempfile.mkdtemp(prefix="run-", dir=workdir)),
        args,
    )
    spec.device = "cuda"
    spec.max_steps = args.steps
    flops = training_flops(model_dir, spec.lora, train_file, spec.max_seq_len)
    measured_peak = matmul_peak(torch.bfloat16, torch.device("cuda"))
    torch.cuda.reset_peak_memory_stats()
    ours = run_ours(spec)
    peak_memory = torch.cuda.max_memory_allocated()
    steady = ours["step_rates"][3:] or ours["step_rates"]
    achieved = flops / ours["seconds"]
    label = f"gpu[{args.model}, {torch.cuda.get_device_name()}, bf16]"
    print(
        f"{label} {ours['steps']} steps of {args.batch_size} examples, {ours['tokens']} tokens "
        f"in {ours['seconds']:.1f} s"
    )
    print(
        f"{label} tokens/s: {ours['tokens'] / ours['seconds']:,.0f} overall, "
        f"{statistics.median(steady):,.0f} median step after warm-up"
    )
    print(f"{label} peak memory: {peak_memory / 2**30:.2f} GiB")
    print(
        f"{label} MFU: {achieved / 1e12:.1f} TFLOP/s = {achieved / H200_BF16_DENSE_PEAK:.1%} of "
        f"H200 bf16 dense peak 989 TFLOP/s ({achieved / measured_peak:.1%} of measured matmul "
        f"peak {measured_peak / 1e12:.0f} TFLOP/s)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("mode", choices=("cpu", "gpu"))
    parser.add_argument("--model", default="tiny-30m", choices=(*SHAPES, "smollm2"))
    parser.add_argument("--examples", type=int, help="default 256 (--dpo: 48)")
    parser.add_argument("--validation-examples", type=int, help="default 24 (--dpo: 16)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--learning-rate", type=float, default=5e-4)
    parser.add_argument("--max-seq-len", type=int, default=2048)
    parser.add_argument("--micro-batch-tokens", type=int, default=4096)
    parser.add_argument("--steps", type=int, default=30, help="gpu mode: optimizer steps")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--workdir", help="keep models and data here instead of a temporary folder")
    parser.add_argument(
        "--base-model", help="an already imported base model directory to use for --model"
    )
    parser.add_argument(
        "--dpo", action="store_true", help="the DPO row: ours against TRL's DPOTrainer"
    )
    parser.add_argument(
        "--dpo-max-words", type=int, default=80, help="--dpo: longest prompt or reply, in words"
    )
    args = parser.parse_args()
    # DPO runs the model over two sequences per example and TRL twice more for its
    # reference: fewer pairs keep the row within minutes on one CPU thread.
    args.examples = args.examples or (48 if args.dpo else 256)
    args.validation_examples = args.validation_examples or (16 if args.dpo else 24)
    if args.dpo:
        dpo_comparison(args)
    elif args.mode == "cpu":
        cpu_comparison(args)
    else:
        gpu_check(args)


if __name__ == "__main__":
    main()
