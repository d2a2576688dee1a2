"""Suspected mislabels: training examples the tuned model disagrees with.

After training, every training example is scored under the tuned adapter: the cross-entropy
of each of its assistant tokens (one batched forward pass over the training set, no
gradients). Examples are put in length buckets (by assistant tokens) and each example's mean
loss gets a robust z-score within its bucket,

    z = 0.6745 * (loss - median) / MAD        (Iglewicz and Hoaglin's modified z-score)

falling back to the mean absolute deviation (z = (loss - median) / (1.2533 * MeanAD)) when
more than half the losses are equal.

Where the answer is a JSON object, the per-token losses are split over its fields: a field's
cost is the summed loss of the tokens of its key and value, in nats (minus the log-probability
the model gives the field). A wrong value shows up there undiluted by the rest of the answer;
the mean over the whole answer spreads one wrong field over every token, and its MAD, under a
model that learned the task, is so small that every hard line looks like an outlier. A field
is costly when its cost is above ``margin_nats`` and an outlier among the same field's costs
in the other lines (robust z above ``z_threshold``). The lines with a costly field are
answered greedily by the tuned model, and that answer decides: where it gives a costly field
another value, the answer itself is scored, and the line is ``structured_field_disagrees``
(naming the field) when the model finds its own value at least ``margin_nats`` likelier than
the label's (``margin``: the label's cost minus the answer's). A label the model confuses
with a nearby candidate (an issue date for a due date) costs a few nats, and the model is
unsure of its own answer too; a value that belongs to another example costs many more. An
answer that agrees with the label, or that the model finds hardly likelier, clears the line
(``cleared_by_agreement``). A JSON line with no costly field is not a suspect, whatever its
mean loss.

Where the check cannot apply (the answer is not a JSON object, its fields are not found
among the tokens, or the greedy answer is not JSON), the loss rule decides: z above
``z_threshold`` is a ``loss_outlier``; a JSON label whose fields were not found is answered
greedily when its z is above ``candidate_z``, flagged when a field differs and cleared when
the answer equals it.

The scores come from the model trained on these very lines, so a wrong label it has learned
by heart costs little: the check finds what the model did not memorise (fewer epochs over a
line leave it less to memorise).

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
from dataclasses import field as dataclass_field
from typing import Any

import structlog
import torch
import torch.nn.functional as F
from transformers import PreTrainedTokenizerBase

from trainer.data import TokenizedExample, pack, plan_micro_batches, tokenize_messages
from trainer.evaluate import generate_answers, prompt_and_reference
from trainer.modeling import target_logits
from trainer.spec import MislabelSpec

log = structlog.get_logger(__name__)

LOSS_OUTLIER = "loss_outlier"
STRUCTURED_FIELD_DISAGREES = "structured_field_disagrees"
REASONS = (LOSS_OUTLIER, STRUCTURED_FIELD_DISAGREES)
CLEARED = "cleared"  # a verdict, never a reason: the greedy answer vouches for the label
# 0.6745 is the 0.75 quantile of the standard normal: MAD / 0.6745 estimates sigma.
MAD_SCALE = 0.6745
MEAN_AD_SCALE = 1.253314  # sqrt(pi / 2): MeanAD * this estimates sigma
STREAM_CONTEXT = 6  # tokens of context when decoding one token's text


@dataclass(frozen=True)
class ExampleLoss:
    line_number: int
    loss: float  # mean cross-entropy over the example's assistant tokens
    target_tokens: int
    token_losses: tuple[float, ...] = dataclass_field(default=(), compare=False, repr=False)


@dataclass(frozen=True)
class Suspect:
    line_number: int
    score: float  # the robust z-score of the example's loss in its bucket
    loss: float
    reason: str
    label: str
    field: str | None = None
    model_answer: str | None = None
    # How much likelier (in nats) the tuned model finds its own value of ``field`` than the
    # label's: minus the log of the likelihood ratio, for structured_field_disagrees.
    margin: float | None = None


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
                    found[id(example)] = ExampleLoss(
                        example.line_number, loss, n, tuple(piece.tolist())
                    )
    finally:
        model.train(was_training)
    return [found[id(example)] for example in examples]


def field_spans(text: str) -> dict[str, tuple[int, int]] | None:
    """Where each field (key and value) of the top-level JSON object ``text`` lies in it, as
    character spans, or None when ``text`` is not one JSON object."""
    decoder = json.JSONDecoder()
    spans: dict[str, tuple[int, int]] = {}
    i = _skip_space(text, 0)
    if not text.startswith("{", i):
        return None
    i = _skip_space(text, i + 1)
    try:
        while not text.startswith("}", i):
            start = i
            key, i = decoder.raw_decode(text, i)
            i = _skip_space(text, i)
            if not isinstance(key, str) or not text.startswith(":", i):
                return None
            _, i = decoder.raw_decode(text, _skip_space(text, i + 1))
            spans[key] = (start, i)
            i = _skip_space(text, i)
            if text.startswith(",", i):
                i = _skip_space(text, i + 1)
                if text.startswith("}", i):
                    return None
            elif not text.startswith("}", i):
                return None
    except json.JSONDecodeError:
        return None
    return spans if _skip_space(text, i + 1) == len(text) else None


def _skip_space(text: str, i: int) -> int:
    while i < len(text) and text[i].isspace():
        i += 1
    return i


def token_texts(tokenizer: PreTrainedTokenizerBase, ids: list[int]) -> list[str]:
    """Each token's share of the decoded text, decoded as a stream: a token's text is what it
    adds to the decoding of the few tokens before it (so leading spaces and characters split
    over several byte tokens come out as a whole decoding would give them)."""
    texts: list[str] = []
    for k in range(len(ids)):
        start = max(0, k - STREAM_CONTEXT)
        before = str(tokenizer.decode(ids[start:k])) if k > start else ""
        now = str(tokenizer.decode(ids[start : k + 1]))
        texts.append(now[len(before) :] if now.startswith(before) else "")
    return texts


def field_costs(
    tokenizer: PreTrainedTokenizerBase,
    example: TokenizedExample,
    loss: ExampleLoss,
    label: str,
) -> dict[str, float] | None:
    """The cost of each top-level field of a JSON-object label: the summed cross-entropy of
    the tokens of its key and value, in nats (minus the log-probability the model gives the
    field after what precedes it), from the example's per-token losses; None when the label
    is not a JSON object or is not found among the target tokens."""
    spans = field_spans(label)
    ids = [example.input_ids[i] for i in range(1, example.n_tokens) if example.trained[i]]
    if not spans or len(ids) != len(loss.token_losses):
        return None
    texts = token_texts(tokenizer, ids)
    decoded = "".join(texts)
    offset = decoded.rfind(label)
    if offset < 0:
        return None
    costs = dict.fromkeys(spans, 0.0)
    position = 0
    for text, token_loss in zip(texts, loss.token_losses, strict=True):
        start, position = position - offset, position + len(text)
        end = position - offset
        for key, (a, b) in spans.items():
            if start < b and end > a:
                costs[key] += token_loss
    return costs


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


@dataclass(frozen=True)
class _Scorer:
    """The tuned model and how to run it: teacher-forced losses and greedy answers."""

    model: torch.nn.Module
    tokenizer: PreTrainedTokenizerBase
    max_tokens: int
    batch_size: int
    device: torch.device
    autocast_dtype: torch.dtype | None
    check_stop: Callable[[], None]

    def losses(self, examples: Sequence[TokenizedExample]) -> list[ExampleLoss]:
        return example_losses(
            self.model,
            examples,
            max_tokens=self.max_tokens,
            device=self.device,
            autocast_dtype=self.autocast_dtype,
            check_stop=self.check_stop,
        )

    def answers(
        self, prompts: Sequence[Sequence[dict[str, Any]]], max_new_tokens: int
    ) -> list[str]:
        if not prompts:
            return []
        return generate_answers(
            self.model,
            self.tokenizer,
            prompts,
            max_new_tokens=max_new_tokens,
            batch_size=self.batch_size,
            device=self.device,
            autocast_dtype=self.autocast_dtype,
            check_stop=self.check_stop,
        )


@dataclass
class _Evidence:
    """What is known of the training set: losses and their z-scores, labels, the cost of
    each field of the JSON-object labels, which of those fields are costly, and the greedy
    answers (with their own field costs) of the lines checked."""

    losses: list[ExampleLoss]
    scores: list[float]
    labels: list[tuple[list[dict[str, Any]], str]]
    structured: list[dict[str, Any] | None]
    costs: list[dict[str, float] | None]
    costly: list[list[str]]
    answers: dict[int, str] = dataclass_field(default_factory=dict)
    answer_costs: dict[int, dict[str, float]] = dataclass_field(default_factory=dict)


def field_z(costs: Sequence[dict[str, float] | None]) -> list[dict[str, float] | None]:
    """Each field cost's robust z-score among the costs of the same field (key) in the other
    lines: what the model pays for a vendor is judged against what it pays for vendors."""
    scores: list[dict[str, float]] = [{} for _ in costs]
    for key in sorted({key for c in costs if c for key in c}):
        members = [i for i, c in enumerate(costs) if c and key in c]
        values = [(costs[i] or {})[key] for i in members]
        for i, z in zip(members, robust_z(values), strict=True):
            scores[i][key] = z
    return [z if c is not None else None for z, c in zip(scores, costs, strict=True)]


def costly_fields(costs: Sequence[dict[str, float] | None], spec: MislabelSpec) -> list[list[str]]:
    """Per line, the fields whose cost is above ``margin_nats`` and an outlier for that field
    (robust z above ``z_threshold``), costliest first."""
    found: list[list[str]] = []
    for line_costs, line_z in zip(costs, field_z(costs), strict=True):
        if not line_costs or line_z is None:
            found.append([])
            continue
        keys = [
            key
            for key, cost in line_costs.items()
            if cost > spec.margin_nats and line_z[key] > spec.z_threshold
        ]
        found.append(sorted(keys, key=lambda key: -line_costs[key]))
    return found


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
    scorer = _Scorer(
        model, tokenizer, max_tokens, generation_batch_size, device, autocast_dtype, check_stop
    )
    started = time.monotonic()
    losses = scorer.losses(examples)
    labels = [prompt_and_reference(example.messages) for example in examples]
    structured = [parse_object(reference) for _, reference in labels]
    costs = [
        field_costs(tokenizer, example, loss, reference) if label is not None else None
        for example, loss, (_, reference), label in zip(
            examples, losses, labels, structured, strict=True
        )
    ]
    evidence = _Evidence(
        losses=losses,
        scores=bucketed_z(losses, spec),
        labels=labels,
        structured=structured,
        costs=costs,
        costly=costly_fields(costs, spec),
    )
    scoring_seconds = time.monotonic() - started
    candidates = _structured_candidates(evidence, examples, spec)
    _check_answers(scorer, evidence, examples, candidates, spec)
    generation_seconds = time.monotonic() - started - scoring_seconds
    suspects, cleared = _judge(examples, evidence, spec)
    figures = {
        "examples_scored": len(examples),
        "tokens_scored": sum(example.n_tokens for example in examples),
        "target_tokens_scored": sum(loss.target_tokens for loss in losses),
        "scoring_seconds": round(scoring_seconds, 3),
        "fields_scored": sum(len(line_costs) for line_costs in costs if line_costs),
        "costly_fields": sum(len(keys) for keys in evidence.costly),
        "structured_candidates": len(candidates),
        "answers_rescored": len(evidence.answer_costs),
        "generation_seconds": round(generation_seconds, 3),
        "seconds": round(time.monotonic() - started, 3),
        "flagged": len(suspects),
        "cleared_by_agreement": cleared,
        "by_reason": {reason: sum(s.reason == reason for s in suspects) for reason in REASONS},
        "z_threshold": spec.z_threshold,
        "candidate_z": spec.candidate_z,
        "margin_nats": spec.margin_nats,
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
    evidence: _Evidence, examples: Sequence[TokenizedExample], spec: MislabelSpec
) -> list[int]:
    """The lines the tuned model answers greedily, at most ``max_structured_checks``: first
    those with a costly field (costliest first), then JSON-object labels whose fields were
    not found among the tokens, by loss z-score above ``candidate_z``."""

    def top_cost(i: int) -> float:
        return (evidence.costs[i] or {})[evidence.costly[i][0]]

    by_field = sorted(
        (i for i, keys in enumerate(evidence.costly) if keys),
        key=lambda i: (-top_cost(i), examples[i].line_number),
    )
    by_loss = sorted(
        (
            i
            for i, z in enumerate(evidence.scores)
            if evidence.costs[i] is None
            and evidence.structured[i] is not None
            and z > spec.candidate_z
            and math.isfinite(z)
        ),
        key=lambda i: (-evidence.scores[i], examples[i].line_number),
    )
    return (by_field + by_loss)[: spec.max_structured_checks]


def _check_answers(
    scorer: _Scorer,
    evidence: _Evidence,
    examples: Sequence[TokenizedExample],
    candidates: Sequence[int],
    spec: MislabelSpec,
) -> None:
    """The candidates' greedy answers, and the field costs of those that contradict a costly
    field (one more teacher-forced pass, over these answers only). An answer is given room
    for twice the longest label's tokens: one that needs more is not in the label's form."""
    if not candidates:
        return
    room = 2 * max(evidence.losses[i].target_tokens for i in candidates)
    prompts = [evidence.labels[i][0] for i in candidates]
    answers = scorer.answers(prompts, min(spec.max_new_tokens, max(room, 1)))
    evidence.answers = dict(zip(candidates, answers, strict=True))
    contradicting = [i for i in candidates if _contradicted(evidence, i)]
    rescored = [
        tokenize_messages(
            scorer.tokenizer,
            [*evidence.labels[i][0], {"role": "assistant", "content": evidence.answers[i]}],
            line_number=examples[i].line_number,
        )
        for i in contradicting
    ]
    for i, example, loss in zip(contradicting, rescored, scorer.losses(rescored), strict=True):
        costs = field_costs(scorer.tokenizer, example, loss, evidence.answers[i])
        evidence.answer_costs[i] = costs or {}


def _answer_object(evidence: _Evidence, i: int) -> dict[str, Any] | None:
    answer = evidence.answers.get(i)
    return parse_object(answer) if answer is not None else None


def _contradicted(evidence: _Evidence, i: int) -> list[str]:
    """The costly fields of line ``i`` to which the tuned model's greedy answer (a JSON
    object) gives another value (or none); [] when there is no such answer."""
    label, answer = evidence.structured[i], _answer_object(evidence, i)
    if label is None or answer is None:
        return []
    return [
        key
        for key in evidence.costly[i]
        if key not in answer or _canonical(answer[key]) != _canonical(label[key])
    ]


def _field_verdict(evidence: _Evidence, i: int, spec: MislabelSpec) -> tuple[str, float] | None:
    """The contradicted field whose label value the tuned model finds least likely beside
    its own (margin = the label's cost - the answer's cost of that field, in nats), when
    that margin reaches ``margin_nats``."""
    own = evidence.answer_costs.get(i, {})
    costs = evidence.costs[i] or {}
    margins = [(key, costs[key] - own.get(key, 0.0)) for key in _contradicted(evidence, i)]
    best = max(margins, key=lambda item: item[1], default=None)
    return best if best is not None and best[1] >= spec.margin_nats else None


def _verdict(
    evidence: _Evidence, i: int, spec: MislabelSpec
) -> tuple[str | None, str | None, float | None]:
    """(reason, field, margin) of line ``i``, reason None when it is not suspected; reason
    "cleared" when the tuned model's greedy answer vouches for a costly line.

    A JSON-object label whose fields were found is judged by its costly fields: none, not
    suspected; answered greedily in JSON, flagged when the answer contradicts one by
    ``margin_nats``, else cleared; not answered in JSON (or past ``max_structured_checks``),
    the loss rule decides. Any other line: flagged when its answer contradicts the label's
    fields, cleared when it agrees, else by the loss rule (z-score above ``z_threshold``)."""
    z = evidence.scores[i]
    by_loss = (LOSS_OUTLIER, None, None) if z > spec.z_threshold else (None, None, None)
    answer = _answer_object(evidence, i)
    if evidence.costs[i] is not None:
        if not evidence.costly[i]:
            return None, None, None
        if answer is None:
            return (by_loss[0], evidence.costly[i][0], None) if by_loss[0] else by_loss
        verdict = _field_verdict(evidence, i, spec)
        if verdict is None:
            return CLEARED, None, None
        return STRUCTURED_FIELD_DISAGREES, verdict[0], verdict[1]
    label = evidence.structured[i]
    field = first_disagreement(label, answer) if label is not None else None
    if field is not None:
        return STRUCTURED_FIELD_DISAGREES, field, None
    if answer is not None:
        # The tuned model answers with the label itself: a costly line it agrees with is a
        # hard example, not a suspected mislabel.
        return (CLEARED, None, None) if by_loss[0] else (None, None, None)
    return by_loss


def _judge(
    examples: Sequence[TokenizedExample], evidence: _Evidence, spec: MislabelSpec
) -> tuple[list[Suspect], int]:
    """The suspects (highest score first) and how many costly lines the tuned model's own
    greedy answer cleared."""
    suspects: list[Suspect] = []
    cleared = 0
    for i, example in enumerate(examples):
        reason, field, margin = _verdict(evidence, i, spec)
        cleared += reason == CLEARED
        if reason is None or reason == CLEARED:
            continue
        suspects.append(
            Suspect(
                line_number=example.line_number,
                score=round(evidence.scores[i], 4),
                loss=round(evidence.losses[i].loss, 6),
                reason=reason,
                label=evidence.labels[i][1],
                field=field,
                model_answer=evidence.answers.get(i),
                margin=round(margin, 4) if margin is not None else None,
            )
        )
    suspects.sort(key=lambda s: (-s.score, s.line_number))
    return suspects, cleared
