"""Direct preference optimisation (DPO) on LoRA: sequence log-probabilities, the loss, scores.

The policy is the base model with its adapter; the reference is the very same weights with
the adapter disabled (peft's ``disable_adapter``), so no second copy of the model is held.
A run that starts from an earlier fine-tuned model's adapter (SFT then DPO) keeps that
reference: the base model, as TRL's DPOTrainer does for a peft model. The reference never
changes during a run, so each pair's reference log-probabilities are computed once, the
first time the pair is met (``ReferenceLogps``), and reused in later epochs.

A pair's chosen and rejected sequences go through the model in one packed row with the
other pairs of the micro-batch (no padding), and the output projection runs only at the
outputs' tokens (trainer.modeling.target_logits): the prompt needs no logits.

The loss is the sigmoid loss of Rafailov et al. (2023): with the log-ratios
``r = log pi(y|x) - log pi_ref(y|x)``, ``loss = -log sigmoid(beta * (r_chosen - r_rejected))``,
averaged over the pairs of the optimizer step. TRL's own loss is a method of its Trainer,
so the few lines are written here and tested against a hand-computed value.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from trainer.data import PreferencePair, TokenizedExample, pack
from trainer.modeling import target_logits


@dataclass(frozen=True)
class DpoLoss:
    losses: torch.Tensor  # per pair
    chosen_rewards: torch.Tensor  # beta * (log pi - log pi_ref) of the preferred output
    rejected_rewards: torch.Tensor


def sigmoid_dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    reference_chosen: torch.Tensor,
    reference_rejected: torch.Tensor,
    *,
    beta: float,
) -> DpoLoss:
    """Per-pair DPO loss from summed sequence log-probabilities."""
    chosen_ratio = policy_chosen - reference_chosen
    rejected_ratio = policy_rejected - reference_rejected
    losses = -F.logsigmoid(beta * (chosen_ratio - rejected_ratio))
    return DpoLoss(losses, beta * chosen_ratio.detach(), beta * rejected_ratio.detach())


def sequence_logps(model: torch.nn.Module, sequences: Sequence[TokenizedExample]) -> torch.Tensor:
    """Summed log-probability of each sequence's target tokens, in one packed forward pass."""
    device = next(model.parameters()).device
    batch = pack(sequences).to(device)
    logits, targets = target_logits(model, batch)
    token_logps = -F.cross_entropy(logits, targets, reduction="none")
    counts = torch.tensor([s.n_target_tokens for s in sequences], device=device)
    owner = torch.repeat_interleave(torch.arange(len(sequences), device=device), counts)
    return torch.zeros(len(sequences), device=device).index_add(0, owner, token_logps)


def pair_logps(model: torch.nn.Module, pairs: Sequence[PreferencePair]) -> torch.Tensor:
    """[pairs, 2]: the chosen and the rejected sequence's log-probability of each pair."""
    sequences = [sequence for pair in pairs for sequence in (pair.chosen, pair.rejected)]
    return sequence_logps(model, sequences).view(len(pairs), 2)


def plan_pair_batches(
    pairs: Sequence[PreferencePair], *, max_tokens: int
) -> list[list[PreferencePair]]:
    """Consecutive groups of whole pairs of at most ``max_tokens`` tokens (a pair longer than
    that goes alone)."""
    groups: list[list[PreferencePair]] = []
    used = 0
    for pair in pairs:
        if groups and used + pair.n_tokens <= max_tokens:
            groups[-1].append(pair)
            used += pair.n_tokens
        else:
            groups.append([pair])
            used = pair.n_tokens
    return groups


def _autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


class ReferenceLogps:
    """The reference model's log-probabilities of pairs (the adapter disabled), each pair's
    computed once; pairs are known by their line number, so one instance serves one file."""

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        max_tokens: int,
        device: torch.device,
        autocast_dtype: torch.dtype | None,
    ) -> None:
        self.model, self.max_tokens = model, max_tokens
        self.device, self.autocast_dtype = device, autocast_dtype
        self._known: dict[int, torch.Tensor] = {}

    def of(self, pairs: Sequence[PreferencePair]) -> torch.Tensor:
        missing = [pair for pair in pairs if pair.line_number not in self._known]
        if missing:
            with (
                torch.no_grad(),
                self.model.disable_adapter(),
                _autocast(self.device, self.autocast_dtype),
            ):
                for group in plan_pair_batches(missing, max_tokens=self.max_tokens):
                    rows = pair_logps(self.model, group).float()
                    for pair, row in zip(group, rows, strict=True):
                        self._known[pair.line_number] = row
        return torch.stack([self._known[pair.line_number] for pair in pairs])


@dataclass(frozen=True)
class DpoStepTotals:
    """One optimizer step's (or this rank's share's) sums."""

    loss_sum: float  # summed per-pair losses
    processed_tokens: int
    target_tokens: int


def accumulate_gradients(
    model: torch.nn.Module,
    pairs: Sequence[PreferencePair],
    *,
    reference: ReferenceLogps,
    beta: float,
    step_pairs: int,
    max_tokens: int,
    autocast: Callable[[], contextlib.AbstractContextManager],
    check_stop: Callable[[], None],
) -> DpoStepTotals:
    """Forward and backward over ``pairs`` in micro-batches; the gradient is that of the mean
    loss over the step's ``step_pairs`` pairs (the optimizer step is the caller's)."""
    loss_sum, processed, targets = 0.0, 0, 0
    for group in plan_pair_batches(pairs, max_tokens=max_tokens):
        check_stop()
        reference_logps = reference.of(group)
        with autocast():
            logps = pair_logps(model, group)
        loss = sigmoid_dpo_loss(
            logps[:, 0], logps[:, 1], reference_logps[:, 0], reference_logps[:, 1], beta=beta
        ).losses.sum()
        (loss / step_pairs).backward()
        loss_sum += loss.item()
        processed += sum(pair.n_tokens for pair in group)
        targets += sum(pair.n_target_tokens for pair in group)
    return DpoStepTotals(loss_sum, processed, targets)


@dataclass(frozen=True)
class PairScores:
    """How a model ranks held-out pairs, beside the reference.

    ``preference_accuracy`` is the share of pairs whose preferred output's log-ratio
    (log pi - log pi_ref) is above the non-preferred output's, a tie counting half: the
    reference against itself ties every pair, so the base model's is 0.5 by definition.
    ``ranking_accuracy`` asks the models themselves, base and tuned alike: the share of
    pairs whose preferred output has the higher mean log-probability per token (summed
    log-probabilities would mostly rank the shorter output first)."""

    loss: float  # mean DPO loss
    preference_accuracy: float
    reward_margin: float  # mean of beta * (preferred log-ratio - non-preferred log-ratio)
    ranking_accuracy: float
    reference_ranking_accuracy: float
    pairs: int


def _share_above(values: torch.Tensor) -> float:
    return ((values > 0).float() + 0.5 * (values == 0).float()).mean().item()


def score_pairs(
    model: torch.nn.Module,
    pairs: Sequence[PreferencePair],
    *,
    reference: ReferenceLogps,
    beta: float,
    max_tokens: int,
    device: torch.device,
    autocast_dtype: torch.dtype | None,
    check_stop: Callable[[], None] = lambda: None,
) -> PairScores:
    """The DPO loss and accuracies of ``pairs``, in eval mode and without gradients."""
    was_training = model.training
    model.eval()
    policy_rows: list[torch.Tensor] = []
    try:
        with torch.no_grad(), _autocast(device, autocast_dtype):
            for group in plan_pair_batches(pairs, max_tokens=max_tokens):
                check_stop()
                policy_rows.append(pair_logps(model, group).float())
    finally:
        model.train(was_training)
    policy = torch.cat(policy_rows)
    ref = reference.of(pairs)
    scored = sigmoid_dpo_loss(policy[:, 0], policy[:, 1], ref[:, 0], ref[:, 1], beta=beta)
    margins = scored.chosen_rewards - scored.rejected_rewards
    lengths = torch.tensor(
        [[pair.chosen.n_target_tokens, pair.rejected.n_target_tokens] for pair in pairs],
        device=policy.device,
    ).clamp(min=1)
    per_token, ref_per_token = policy / lengths, ref / lengths
    return PairScores(
        loss=scored.losses.mean().item(),
        preference_accuracy=_share_above(margins),
        reward_margin=margins.mean().item(),
        ranking_accuracy=_share_above(per_token[:, 0] - per_token[:, 1]),
        reference_ranking_accuracy=_share_above(ref_per_token[:, 0] - ref_per_token[:, 1]),
        pairs=len(pairs),
    )


def demo_preference_records(chat_records: Sequence[dict], *, offset: int = 1) -> list[dict]:
    """Preference examples from chat examples (tests, benchmarks). Each prompt's own answer
    is preferred; when that answer is a JSON object (the demo task), over the same fields
    written as prose ("vendor: ...; total: ..."), else over the answer of the example
    ``offset`` places on."""
    records = []
    for index, record in enumerate(chat_records):
        messages = record["messages"]
        answer = messages[-1]["content"]
        try:
            fields = json.loads(answer)
        except ValueError:
            fields = None
        if isinstance(fields, dict):
            worse = "; ".join(f"{key}: {value}" for key, value in fields.items())
        else:
            worse = chat_records[(index + offset) % len(chat_records)]["messages"][-1]["content"]
        records.append(
            {
                "input": {"messages": messages[:-1]},
                "preferred_output": [{"role": "assistant", "content": answer}],
                "non_preferred_output": [{"role": "assistant", "content": worse}],
            }
        )
    return records
