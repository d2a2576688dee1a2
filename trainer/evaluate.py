"""Evaluation against baselines, and a check for degradation.

Three systems answer the same held-out prompts: the base model zero-shot, the base model with
a few-shot prompt built from training examples (the prompt-engineering baseline), and the
tuned model. Each is scored by loss/perplexity on the reference answers and, on greedy
generations, by exact match and token-level F1. An out-of-distribution probe scores general
text before and after tuning. A verdict compares the numbers with the spec's thresholds.

The base model is the tuned model with its adapter switched off, so one copy of the weights
serves all three systems.

A DPO run is evaluated on held-out preference pairs instead (``evaluate_preferences``): the
preference accuracy of the tuned and the base model (the share of pairs whose preferred
output's log-ratio against the base is above the non-preferred one's; the base model ties
every pair, 0.5), each model's own ranking accuracy (per-token likelihood), the tuned
model's DPO loss and reward margin, the same OOD probe, and a verdict on the preference
accuracy gained and the OOD loss.
"""

from __future__ import annotations

import contextlib
import math
import random
import re
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
import torch
from transformers import GenerationConfig, PreTrainedTokenizerBase

from trainer.data import (
    PreferencePair,
    TokenizedExample,
    pack,
    plan_micro_batches,
    render_chat,
    tokenize_messages,
)
from trainer.dpo import ReferenceLogps, score_pairs
from trainer.hashing import sha256_file
from trainer.modeling import summed_target_loss, summed_target_loss_and_hits
from trainer.spec import EvalSpec

log = structlog.get_logger(__name__)

SYSTEMS = ("base_zero_shot", "base_few_shot", "tuned")
OOD_WINDOW_TOKENS = 512
# The base model is its own DPO reference: every held-out pair is a tie, counted half.
BASE_PREFERENCE_ACCURACY = 0.5
# General English prose committed with the trainer: the default out-of-distribution probe.
OOD_TEXT_PATH = Path(__file__).parent / "data" / "ood_general.txt"


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


@dataclass(frozen=True)
class TargetScore:
    loss: float  # mean cross-entropy over the target tokens
    accuracy: float  # share of target tokens that are the model's argmax


def score_targets(
    model: torch.nn.Module,
    examples: Sequence[TokenizedExample],
    *,
    max_tokens: int,
    device: torch.device,
    autocast_dtype: torch.dtype | None,
) -> TargetScore:
    """mean_target_loss's pass, with the mean token accuracy beside the loss (OpenAI's
    ``*_mean_token_accuracy``)."""
    was_training = model.training
    model.eval()
    total, hits, count = 0.0, 0, 0
    try:
        with torch.no_grad(), _autocast(device, autocast_dtype):
            for group in plan_micro_batches(examples, max_tokens=max_tokens, packing=True):
                batch = pack(group).to(device)
                loss_sum, batch_hits = summed_target_loss_and_hits(model, batch)
                total, hits = total + loss_sum, hits + batch_hits
                count += batch.n_target_tokens
    finally:
        model.train(was_training)
    return TargetScore(loss=total / max(count, 1), accuracy=hits / max(count, 1))


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


@dataclass(frozen=True)
class _Prompts:
    """What the three systems are asked: held-out prompts, plain and with few-shot examples,
    and the same conversations with the reference answer, tokenised for scoring."""

    generation_set: list[TokenizedExample]
    prompts: list[list[dict[str, Any]]]
    references: list[str]
    shots: list[list[dict[str, Any]]]
    few_shot_prompts: list[list[dict[str, Any]]]
    scored_plain: list[TokenizedExample]
    scored_few_shot: list[TokenizedExample]


def _prompts(
    tokenizer: PreTrainedTokenizerBase,
    held_out: Sequence[TokenizedExample],
    few_shot_pool: Sequence[TokenizedExample],
    spec: EvalSpec,
    seed: int,
) -> _Prompts:
    generation_set = list(held_out[: spec.max_generation_examples])
    pairs = [prompt_and_reference(example.messages) for example in generation_set]
    shots = pick_shots(few_shot_pool, count=spec.few_shot_examples, seed=seed)
    return _Prompts(
        generation_set=generation_set,
        prompts=[prompt for prompt, _ in pairs],
        references=[reference for _, reference in pairs],
        shots=shots,
        few_shot_prompts=[few_shot_messages(prompt, shots) for prompt, _ in pairs],
        scored_plain=[
            tokenize_messages(tokenizer, [*prompt, {"role": "assistant", "content": ref}])
            for prompt, ref in pairs
        ],
        scored_few_shot=[
            tokenize_messages(
                tokenizer,
                [*few_shot_messages(prompt, shots), {"role": "assistant", "content": ref}],
            )
            for prompt, ref in pairs
        ],
    )


@dataclass
class _Judge:
    """Scores (loss) and answers (greedy generation) with whatever the model is right now:
    the tuned model, or the base model inside `adapter_disabled`."""

    model: torch.nn.Module
    tokenizer: PreTrainedTokenizerBase
    spec: EvalSpec
    max_tokens: int
    device: torch.device
    autocast_dtype: torch.dtype | None
    check_stop: Callable[[], None]

    def score(self, examples: Sequence[TokenizedExample]) -> float:
        self.check_stop()
        return mean_target_loss(
            self.model,
            examples,
            max_tokens=self.max_tokens,
            device=self.device,
            autocast_dtype=self.autocast_dtype,
        )

    def answers(self, prompts: Sequence[Sequence[dict[str, Any]]]) -> list[str]:
        return generate_answers(
            self.model,
            self.tokenizer,
            prompts,
            max_new_tokens=self.spec.max_new_tokens,
            batch_size=self.spec.generation_batch_size,
            device=self.device,
            autocast_dtype=self.autocast_dtype,
            check_stop=self.check_stop,
        )


@dataclass
class _Outcome:
    losses: dict[str, float]
    predictions: dict[str, list[str]]
    ood_before: float
    ood_after: float


def _run_systems(judge: _Judge, prompts: _Prompts, ood_set: Sequence[TokenizedExample]) -> _Outcome:
    """The base model (adapter off) zero- and few-shot, then the tuned model; OOD both ways."""
    predictions: dict[str, list[str]] = {}
    losses: dict[str, float] = {}
    with adapter_disabled(judge.model):
        losses["base_zero_shot"] = judge.score(prompts.scored_plain)
        predictions["base_zero_shot"] = judge.answers(prompts.prompts)
        losses["base_few_shot"] = judge.score(prompts.scored_few_shot)
        predictions["base_few_shot"] = judge.answers(prompts.few_shot_prompts)
        ood_before = judge.score(ood_set)
    losses["tuned"] = judge.score(prompts.scored_plain)
    predictions["tuned"] = judge.answers(prompts.prompts)
    ood_after = judge.score(ood_set)
    return _Outcome(losses, predictions, ood_before, ood_after)


def _report(
    held_out: Sequence[TokenizedExample],
    prompts: _Prompts,
    outcome: _Outcome,
    ood_source: Path,
    ood_set: Sequence[TokenizedExample],
) -> dict[str, Any]:
    predictions = outcome.predictions
    return {
        "held_out_examples": len(held_out),
        "generation_examples": len(prompts.generation_set),
        "few_shot_examples": len(prompts.shots),
        "systems": {
            system: _system_metrics(outcome.losses[system], predictions[system], prompts.references)
            for system in SYSTEMS
        },
        "ood_probe": {
            "text_file": ood_source.name,
            "text_sha256": sha256_file(ood_source),
            "tokens_scored": sum(example.n_target_tokens for example in ood_set),
            "loss_before": outcome.ood_before,
            "loss_after": outcome.ood_after,
            "relative_change": (outcome.ood_after - outcome.ood_before) / outcome.ood_before,
        },
        "samples": [
            {
                "line_number": example.line_number,
                "reference": prompts.references[i],
                **{system: predictions[system][i] for system in SYSTEMS},
            }
            for i, example in enumerate(prompts.generation_set[:3])
        ],
    }


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
    prompts = _prompts(tokenizer, held_out, few_shot_pool, spec, seed)
    ood_source = Path(spec.ood_text_file) if spec.ood_text_file else OOD_TEXT_PATH
    ood_set = ood_examples(tokenizer, ood_source.read_text(), max_tokens=spec.ood_max_tokens)
    judge = _Judge(model, tokenizer, spec, max_tokens, device, autocast_dtype, check_stop)
    report = _report(held_out, prompts, _run_systems(judge, prompts, ood_set), ood_source, ood_set)
    report["verdict"] = verdict(report, spec)
    log.info(
        "evaluation.completed",
        **{f"{system}_exact_match": report["systems"][system]["exact_match"] for system in SYSTEMS},
        ood_relative_change=report["ood_probe"]["relative_change"],
        passed=report["verdict"]["passed"],
    )
    return report


def evaluate_preferences(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    *,
    held_out: Sequence[PreferencePair],
    reference: ReferenceLogps,
    beta: float,
    spec: EvalSpec,
    max_tokens: int,
    device: torch.device,
    autocast_dtype: torch.dtype | None,
    check_stop: Callable[[], None],
) -> dict[str, Any]:
    """The evaluation report of a DPO run: base and tuned model on the held-out pairs, the
    OOD probe, and the verdict."""
    scores = score_pairs(
        model,
        held_out,
        reference=reference,
        beta=beta,
        max_tokens=max_tokens,
        device=device,
        autocast_dtype=autocast_dtype,
        check_stop=check_stop,
    )
    ood_source = Path(spec.ood_text_file) if spec.ood_text_file else OOD_TEXT_PATH
    ood_set = ood_examples(tokenizer, ood_source.read_text(), max_tokens=spec.ood_max_tokens)
    judge = _Judge(model, tokenizer, spec, max_tokens, device, autocast_dtype, check_stop)
    with adapter_disabled(model):
        ood_before = judge.score(ood_set)
    ood_after = judge.score(ood_set)
    report: dict[str, Any] = {
        "method": "dpo",
        "held_out_examples": scores.pairs,
        "systems": {
            "base": {
                "preference_accuracy": BASE_PREFERENCE_ACCURACY,
                "ranking_accuracy": scores.reference_ranking_accuracy,
                "dpo_loss": math.log(2),
            },
            "tuned": {
                "preference_accuracy": scores.preference_accuracy,
                "ranking_accuracy": scores.ranking_accuracy,
                "reward_margin": scores.reward_margin,
                "dpo_loss": scores.loss,
            },
        },
        "ood_probe": {
            "text_file": ood_source.name,
            "text_sha256": sha256_file(ood_source),
            "tokens_scored": sum(example.n_target_tokens for example in ood_set),
            "loss_before": ood_before,
            "loss_after": ood_after,
            "relative_change": (ood_after - ood_before) / ood_before,
        },
    }
    report["verdict"] = _preference_verdict(report, spec)
    log.info(
        "evaluation.completed",
        method="dpo",
        tuned_preference_accuracy=scores.preference_accuracy,
        base_ranking_accuracy=scores.reference_ranking_accuracy,
        tuned_ranking_accuracy=scores.ranking_accuracy,
        passed=report["verdict"]["passed"],
    )
    return report


def _preference_verdict(report: dict[str, Any], spec: EvalSpec) -> dict[str, Any]:
    """A DPO run passes when its preference accuracy beats the base model's by the margin
    and the OOD loss rose within the limit."""
    gained = report["systems"]["tuned"]["preference_accuracy"] - BASE_PREFERENCE_ACCURACY
    ood_change = report["ood_probe"]["relative_change"]
    checks = [
        {
            "name": "tuned_beats_base_preference_accuracy",
            "passed": gained >= spec.min_preference_accuracy_margin,
            "value": gained,
            "threshold": spec.min_preference_accuracy_margin,
        },
        {
            "name": "ood_loss_increase_within_limit",
            "passed": ood_change <= spec.max_ood_loss_increase,
            "value": ood_change,
            "threshold": spec.max_ood_loss_increase,
        },
    ]
    return {"passed": all(check["passed"] for check in checks), "checks": checks}
