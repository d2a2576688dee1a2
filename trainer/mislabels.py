"""Suspected mislabels: training examples the tuned model disagrees with.

After training, every training example is scored under the tuned adapter: the mean
cross-entropy of its assistant tokens (one batched forward pass over the training set, no
gradients). Examples are put in length buckets (by assistant tokens) and each loss gets a
robust z-score within its bucket,

    z = 0.6745 * (loss - median) / MAD        (Iglewicz and Hoaglin's modified z-score)

falling back to the mean absolute deviation (z = (loss - median) / (1.2533 * MeanAD)) when
more than half the losses are equal. An example whose z is above ``z_threshold`` is a
``loss_outlier``. A cheap structured check follows where it applies: when an example's
answer is a JSON object and its z is above ``candidate_z``, the tuned model answers the
prompt greedily and the two objects are compared field by field; a field that differs makes
it ``structured_field_disagrees`` (naming the field); a structured line whose greedy answer
equals the label is cleared, whatever its loss (the tuned model says what the label says: a
hard example, not a suspect; counted in ``cleared_by_agreement``). A model that learned the
task answers with the pattern of the other examples, so a planted wrong value shows up as
both a costly token and a disagreeing field.

The report holds the flagged lines with their label (the assistant answer, which is the
user's own training data: it is returned, never logged) and the cost of the scoring.
"""

from __future__ import annotations

import contextlib
import json
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import structlog
import torch
import torch.nn.functional as F
from transformers import PreTrainedTokenizerBase

from trainer.data import TokenizedExample, pack, plan_micro_batches
from trainer.evaluate import generate_answers, prompt_and_reference
from trainer.modeling import target_logits
from trainer.spec import MislabelSpec

log = structlog.get_logger(__name__)

LOSS_OUTLIER = "loss_outlier"
STRUCTURED_FIELD_DISAGREES = "structured_field_disagrees"
REASONS = (LOSS_OUTLIER, STRUCTURED_FIELD_DISAGREES)
# 0.6745 is the 0.75 quantile of the standard normal: MAD / 0.6745 estimates sigma.
MAD_SCALE = 0.6745
MEAN_AD_SCALE = 1.253314  # sqrt(pi / 2): MeanAD * this estimates sigma


@dataclass(frozen=True)
class ExampleLoss:
    line_number: int
    loss: float  # mean cross-entropy over the example's assistant tokens
    target_tokens: int


@dataclass(frozen=True)
class Suspect:
    line_number: int
    score: float  # the robust z-score of the example's loss in its bucket
    loss: float
    reason: str
    label: str
    field: str | None = None
    model_answer: str | None = None


def robust_z(values: Sequence[float]) -> list[float]:
    """Modified z-scores of ``values`` around their median (0 for all when they are all
    equal). Deterministic: no sampling, no order dependence."""
    if not values:
        return []
    median = statistics.median(values)
    deviations = [abs(value - median) for value in values]
    mad = statistics.median(deviations)
    if mad > 0:
        return [MAD_SCALE * (value - median) / mad for value in values]
    mean_ad = sum(deviations) / len(deviations)
    if mean_ad > 0:
        return [(value - median) / (MEAN_AD_SCALE * mean_ad) for value in values]
    return [0.0 for _ in values]


def length_buckets(lengths: Sequence[int], *, min_size: int, max_buckets: int) -> list[int]:
    """A bucket index per item: items sorted by length (ties by position) cut into equal
    runs of at least ``min_size`` items, at most ``max_buckets`` runs."""
    count = max(1, min(max_buckets, len(lengths) // max(min_size, 1)))
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    buckets = [0] * len(lengths)
    for rank, index in enumerate(order):
        buckets[index] = min(count - 1, rank * count // max(len(lengths), 1))
    return buckets


def bucketed_z(losses: Sequence[ExampleLoss], spec: MislabelSpec) -> list[float]:
    """Each example's robust z-score within its length bucket."""
    buckets = length_buckets(
        [example.target_tokens for example in losses],
        min_size=spec.min_bucket_examples,
        max_buckets=spec.max_buckets,
    )
    scores = [0.0] * len(losses)
    for bucket in sorted(set(buckets)):
        members = [i for i, b in enumerate(buckets) if b == bucket]
        for i, z in zip(members, robust_z([losses[i].loss for i in members]), strict=True):
            scores[i] = z
    return scores


def example_losses(
    model: torch.nn.Module,
    examples: Sequence[TokenizedExample],
    *,
    max_tokens: int,
    device: torch.device,
    autocast_dtype: torch.dtype | None,
    check_stop: Callable[[], None],
) -> list[ExampleLoss]:
    """One packed, gradient-free pass: each example's mean loss on its assistant tokens.
    Within a packed row the target positions come example by example, so the per-token
    losses split back by each example's target count."""
    was_training = model.training
    model.eval()
    found: dict[int, ExampleLoss] = {}
    autocast: contextlib.AbstractContextManager = (
        torch.autocast(device_type=device.type, dtype=autocast_dtype)
        if autocast_dtype is not None
        else contextlib.nullcontext()
    )
    try:
        with torch.no_grad(), autocast:
            for group in plan_micro_batches(examples, max_tokens=max_tokens, packing=True):
                check_stop()
                batch = pack(group).to(device)
                logits, targets = target_logits(model, batch)
                per_token = F.cross_entropy(logits, targets, reduction="none").cpu()
                start = 0
                for example in group:
                    n = example.n_target_tokens
                    piece = per_token[start : start + n]
                    start += n
                    loss = float(piece.mean()) if n else 0.0
                    found[id(example)] = ExampleLoss(example.line_number, loss, n)
    finally:
        model.train(was_training)
    return [found[id(example)] for example in examples]


def parse_object(text: str) -> dict[str, Any] | None:
    """The answer as a JSON object, or None when it is not one."""
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def first_disagreement(label: dict[str, Any], answer: dict[str, Any] | None) -> str | None:
    """The first field of the label (in its order) whose value the answer does not share;
    an answer that is not a JSON object disagrees on nothing (the check does not apply)."""
    if answer is None:
        return None
    for key, value in label.items():
        if key not in answer or _canonical(answer[key]) != _canonical(value):
            return key
    return None


def _canonical(value: Any) -> str:
    if isinstance(value, str):
        return " ".join(value.split()).casefold()
    return json.dumps(value, sort_keys=True)


def find_suspects(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    examples: Sequence[TokenizedExample],
    *,
    spec: MislabelSpec,
    max_tokens: int,
    generation_batch_size: int,
    device: torch.device,
    autocast_dtype: torch.dtype | None,
    check_stop: Callable[[], None],
) -> dict[str, Any]:
    """The report: ``figures`` (what the scoring cost and found) and ``flagged`` (one entry
    per suspected line, highest score first)."""
    started = time.monotonic()
    losses = example_losses(
        model,
        examples,
        max_tokens=max_tokens,
        device=device,
        autocast_dtype=autocast_dtype,
        check_stop=check_stop,
    )
    scoring_seconds = time.monotonic() - started
    scores = bucketed_z(losses, spec)
    labels = [prompt_and_reference(example.messages) for example in examples]
    structured = [parse_object(reference) for _, reference in labels]
    candidates = _structured_candidates(scores, structured, examples, spec)
    generation_started = time.monotonic()
    answers: dict[int, str] = {}
    if candidates:
        generated = generate_answers(
            model,
            tokenizer,
            [labels[i][0] for i in candidates],
            max_new_tokens=spec.max_new_tokens,
            batch_size=generation_batch_size,
            device=device,
            autocast_dtype=autocast_dtype,
            check_stop=check_stop,
        )
        answers = dict(zip(candidates, generated, strict=True))
    generation_seconds = time.monotonic() - generation_started
    suspects, cleared = _judge(examples, losses, scores, labels, structured, answers, spec)
    figures = {
        "examples_scored": len(examples),
        "tokens_scored": sum(example.n_tokens for example in examples),
        "target_tokens_scored": sum(loss.target_tokens for loss in losses),
        "scoring_seconds": round(scoring_seconds, 3),
        "structured_candidates": len(candidates),
        "generation_seconds": round(generation_seconds, 3),
        "seconds": round(time.monotonic() - started, 3),
        "flagged": len(suspects),
        "cleared_by_agreement": cleared,
        "by_reason": {reason: sum(s.reason == reason for s in suspects) for reason in REASONS},
        "z_threshold": spec.z_threshold,
        "candidate_z": spec.candidate_z,
        "median_loss": round(statistics.median([loss.loss for loss in losses]), 6)
        if losses
        else None,
    }
    log.info(
        "mislabels.scored",
        examples=figures["examples_scored"],
        flagged=figures["flagged"],
        seconds=figures["seconds"],
    )
    return {"figures": figures, "flagged": [asdict(suspect) for suspect in suspects]}


def _structured_candidates(
    scores: Sequence[float],
    structured: Sequence[dict[str, Any] | None],
    examples: Sequence[TokenizedExample],
    spec: MislabelSpec,
) -> list[int]:
    """The examples whose answer the tuned model is asked for: JSON-object labels with a
    finite z above ``candidate_z``, highest first, at most ``max_structured_checks``."""
    return sorted(
        (
            i
            for i, z in enumerate(scores)
            if structured[i] is not None and z > spec.candidate_z and math.isfinite(z)
        ),
        key=lambda i: (-scores[i], examples[i].line_number),
    )[: spec.max_structured_checks]


def _judge(
    examples: Sequence[TokenizedExample],
    losses: Sequence[ExampleLoss],
    scores: Sequence[float],
    labels: Sequence[tuple[list[dict[str, Any]], str]],
    structured: Sequence[dict[str, Any] | None],
    answers: dict[int, str],
    spec: MislabelSpec,
) -> tuple[list[Suspect], int]:
    """The suspects (highest score first) and how many loss outliers the tuned model's
    own answer cleared."""
    suspects: list[Suspect] = []
    cleared = 0
    for i, example in enumerate(examples):
        field = None
        if i in answers:
            label_object = structured[i]
            assert label_object is not None
            answer_object = parse_object(answers[i])
            field = first_disagreement(label_object, answer_object)
            if field is None and answer_object is not None:
                # The tuned model answers with the label itself: a costly line it agrees
                # with is a hard example, not a suspected mislabel.
                cleared += scores[i] > spec.z_threshold
                continue
        if field is None and not scores[i] > spec.z_threshold:
            continue
        suspects.append(
            Suspect(
                line_number=example.line_number,
                score=round(scores[i], 4),
                loss=round(losses[i].loss, 6),
                reason=STRUCTURED_FIELD_DISAGREES if field is not None else LOSS_OUTLIER,
                label=labels[i][1],
                field=field,
                model_answer=answers.get(i),
            )
        )
    suspects.sort(key=lambda s: (-s.score, s.line_number))
    return suspects, cleared
