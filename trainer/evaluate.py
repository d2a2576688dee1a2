"""Evaluation against baselines, and a check for degradation.

Three systems answer the same held-out prompts: the base model zero-shot, the base model with
a few-shot prompt built from training examples (the prompt-engineering baseline), and the
tuned model. Each is scored by loss/perplexity on the reference answers and, on greedy
generations, by exact match and token-level F1. An out-of-distribution probe scores general
text before and after tuning. A verdict compares the numbers with the spec's thresholds.

The base model is the tuned model with its adapter switched off, so one copy of the weights
serves all three systems.
"""

from __future__ import annotations

import contextlib
import math
import random
import re
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import structlog
import torch
from transformers import GenerationConfig, PreTrainedTokenizerBase

from trainer.base_models import OOD_TEXT_PATH
from trainer.data import TokenizedExample, pack, plan_micro_batches, render_chat, tokenize_messages
from trainer.hashing import sha256_file
from trainer.modeling import summed_target_loss
from trainer.spec import EvalSpec

log = structlog.get_logger(__name__)

SYSTEMS = ("base_zero_shot", "base_few_shot", "tuned")
OOD_WINDOW_TOKENS = 512


def normalise_answer(text: str) -> str:
    return " ".join(text.split())


def exact_match(prediction: str, reference: str) -> bool:
    return normalise_answer(prediction) == normalise_answer(reference)


def answer_tokens(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def token_f1(prediction: str, reference: str) -> float:
    """SQuAD-style F1 over lower-cased word tokens."""
    predicted, expected = answer_tokens(prediction), answer_tokens(reference)
    if not predicted or not expected:
        return float(predicted == expected)
    overlap = sum((Counter(predicted) & Counter(expected)).values())
    if overlap == 0:
        return 0.0
    precision, recall = overlap / len(predicted), overlap / len(expected)
    return 2 * precision * recall / (precision + recall)


def prompt_and_reference(messages: Sequence[dict[str, Any]]) -> tuple[list[dict[str, Any]], str]:
    """The conversation up to its last assistant turn, and that turn's text."""
    last = max(i for i, message in enumerate(messages) if message["role"] == "assistant")
    return list(messages[:last]), messages[last]["content"]


def few_shot_messages(
    prompt: Sequence[dict[str, Any]], shots: Sequence[Sequence[dict[str, Any]]]
) -> list[dict[str, Any]]:
    """System turn(s), then each shot as an untrained user/assistant exchange, then the prompt."""
    system = [m for m in prompt if m["role"] == "system"]
    demonstrations = [
        {**message, "weight": 0}
        for shot in shots
        for message in shot
        if message["role"] in ("user", "assistant")
    ]
    return system + demonstrations + [m for m in prompt if m["role"] != "system"]


def pick_shots(
    pool: Sequence[TokenizedExample], *, count: int, seed: int
) -> list[list[dict[str, Any]]]:
    chosen = random.Random(seed).sample(  # noqa: S311 - a reproducible pick, not a secret
        range(len(pool)), min(count, len(pool))
    )
    return [list(pool[index].messages) for index in chosen]


@contextlib.contextmanager
def adapter_disabled(model: torch.nn.Module) -> Iterator[None]:
    with model.disable_adapter():
        yield


def mean_target_loss(
    model: torch.nn.Module,
    examples: Sequence[TokenizedExample],
    *,
    max_tokens: int,
    device: torch.device,
    autocast_dtype: torch.dtype | None,
) -> float:
    """Mean cross-entropy over all target tokens of `examples`, in eval mode, packed."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        with torch.no_grad(), _autocast(device, autocast_dtype):
            for group in plan_micro_batches(examples, max_tokens=max_tokens, packing=True):
                batch = pack(group).to(device)
                total += summed_target_loss(model, batch).item()
                count += batch.n_target_tokens
    finally:
        model.train(was_training)
    return total / max(count, 1)


def _autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def generate_answers(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[Sequence[dict[str, Any]]],
    *,
    max_new_tokens: int,
    batch_size: int,
    device: torch.device,
    autocast_dtype: torch.dtype | None,
    check_stop: Callable[[], None],
) -> list[str]:
    """Greedy, batched, left-padded generation; answers are decoded without special tokens."""
    config = GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=False,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    rendered = [render_chat(tokenizer, prompt, add_generation_prompt=True) for prompt in prompts]
    # Longest first keeps similar lengths together, so little of each batch is padding.
    order = sorted(range(len(rendered)), key=lambda i: -len(rendered[i]))
    answers: dict[int, str] = {}
    was_training = model.training
    model.eval()
    padding_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        for start in range(0, len(order), batch_size):
            check_stop()
            indices = order[start : start + batch_size]
            encoded = tokenizer(
                [rendered[i] for i in indices],
                add_special_tokens=False,
                padding=True,
                return_tensors="pt",
            ).to(device)
            with torch.no_grad(), _autocast(device, autocast_dtype):
                output = model.generate(**encoded, generation_config=config)
            new_tokens = output[:, encoded["input_ids"].shape[1] :]
            for index, tokens in zip(indices, new_tokens, strict=True):
                answers[index] = tokenizer.decode(tokens, skip_special_tokens=True).strip()
    finally:
        tokenizer.padding_side = padding_side
        model.train(was_training)
    return [answers[i] for i in range(len(rendered))]


def ood_examples(
    tokenizer: PreTrainedTokenizerBase, text: str, *, max_tokens: int
) -> list[TokenizedExample]:
    """General text cut into windows in which every token but the first is scored."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"][:max_tokens]
    windows = [ids[i : i + OOD_WINDOW_TOKENS] for i in range(0, len(ids), OOD_WINDOW_TOKENS)]
    return [
        TokenizedExample(tuple(window), (False,) + (True,) * (len(window) - 1), 0)
        for window in windows
        if len(window) > 1
    ]


def _system_metrics(
    loss: float, predictions: Sequence[str], references: Sequence[str]
) -> dict[str, Any]:
    matches = [exact_match(p, r) for p, r in zip(predictions, references, strict=True)]
    f1s = [token_f1(p, r) for p, r in zip(predictions, references, strict=True)]
    return {
        "loss": loss,
        "perplexity": math.exp(min(loss, 50.0)),
        "exact_match": sum(matches) / len(matches),
        "token_f1": sum(f1s) / len(f1s),
        "n_generated": len(predictions),
    }


def verdict(report: dict[str, Any], spec: EvalSpec) -> dict[str, Any]:
    systems = report["systems"]
    best_baseline = max(
        systems["base_zero_shot"]["exact_match"], systems["base_few_shot"]["exact_match"]
    )
    tuned = systems["tuned"]["exact_match"]
    ood_change = report["ood_probe"]["relative_change"]
    checks = [
        {
            "name": "tuned_beats_best_baseline_exact_match",
            "passed": tuned >= best_baseline + spec.min_exact_match_margin,
            "value": tuned - best_baseline,
            "threshold": spec.min_exact_match_margin,
        },
        {
            "name": "ood_loss_increase_within_limit",
            "passed": ood_change <= spec.max_ood_loss_increase,
            "value": ood_change,
            "threshold": spec.max_ood_loss_increase,
        },
    ]
    return {"passed": all(check["passed"] for check in checks), "checks": checks}


def evaluate_against_baselines(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    *,
    held_out: Sequence[TokenizedExample],
    few_shot_pool: Sequence[TokenizedExample],
    spec: EvalSpec,
    seed: int,
    max_tokens: int,
    device: torch.device,
    autocast_dtype: torch.dtype | None,
    check_stop: Callable[[], None],
) -> dict[str, Any]:
    """The evaluation report: three systems, the OOD probe and the verdict."""
    generation_set = list(held_out[: spec.max_generation_examples])
    pairs = [prompt_and_reference(example.messages) for example in generation_set]
    prompts = [prompt for prompt, _ in pairs]
    references = [reference for _, reference in pairs]
    shots = pick_shots(few_shot_pool, count=spec.few_shot_examples, seed=seed)
    few_shot_prompts = [few_shot_messages(prompt, shots) for prompt in prompts]

    def score(examples: Sequence[TokenizedExample]) -> float:
        check_stop()
        return mean_target_loss(
            model, examples, max_tokens=max_tokens, device=device, autocast_dtype=autocast_dtype
        )

    def answers(prompt_set: Sequence[Sequence[dict[str, Any]]]) -> list[str]:
        return generate_answers(
            model,
            tokenizer,
            prompt_set,
            max_new_tokens=spec.max_new_tokens,
            batch_size=spec.generation_batch_size,
            device=device,
            autocast_dtype=autocast_dtype,
            check_stop=check_stop,
        )

    few_shot_scored = [
        tokenize_messages(
            tokenizer, [*few_shot_messages(prompt, shots), {"role": "assistant", "content": ref}]
        )
        for prompt, ref in pairs
    ]
    scored_plain = [
        tokenize_messages(tokenizer, [*prompt, {"role": "assistant", "content": ref}])
        for prompt, ref in pairs
    ]
    ood_source = Path(spec.ood_text_file) if spec.ood_text_file else OOD_TEXT_PATH
    ood_set = ood_examples(tokenizer, ood_source.read_text(), max_tokens=spec.ood_max_tokens)

    predictions: dict[str, list[str]] = {}
    losses: dict[str, float] = {}
    with adapter_disabled(model):
        losses["base_zero_shot"] = score(scored_plain)
        predictions["base_zero_shot"] = answers(prompts)
        losses["base_few_shot"] = score(few_shot_scored)
        predictions["base_few_shot"] = answers(few_shot_prompts)
        ood_before = score(ood_set)
    losses["tuned"] = score(scored_plain)
    predictions["tuned"] = answers(prompts)
    ood_after = score(ood_set)

    report: dict[str, Any] = {
        "held_out_examples": len(held_out),
        "generation_examples": len(generation_set),
        "few_shot_examples": len(shots),
        "systems": {
            system: _system_metrics(losses[system], predictions[system], references)
            for system in SYSTEMS
        },
        "ood_probe": {
            "text_file": ood_source.name,
            "text_sha256": sha256_file(ood_source),
            "tokens_scored": sum(example.n_target_tokens for example in ood_set),
            "loss_before": ood_before,
            "loss_after": ood_after,
            "relative_change": (ood_after - ood_before) / ood_before,
        },
        "samples": [
            {
                "line_number": example.line_number,
                "reference": references[i],
                **{system: predictions[system][i] for system in SYSTEMS},
            }
            for i, example in enumerate(generation_set[:3])
        ],
    }
    report["verdict"] = verdict(report, spec)
    log.info(
        "evaluation.completed",
        **{f"{system}_exact_match": report["systems"][system]["exact_match"] for system in SYSTEMS},
        ood_relative_change=report["ood_probe"]["relative_change"],
        passed=report["verdict"]["passed"],
    )
    return report
