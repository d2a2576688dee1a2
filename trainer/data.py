"""Training data: JSONL examples -> token ids with assistant-only targets -> batches.

Each example is rendered with the base model's own chat template and tokenised segment by
segment, so the prompt tokens are exactly what the model sees at inference time (the template
rendered with a generation prompt) and the trained tokens are each assistant reply up to and
including the end-of-turn token (the tokenizer's EOS), so the tuned model learns to stop.
Assistant messages with OpenAI's `"weight": 0` stay in the context but are not trained on.

Preference files (DPO, OpenAI's ``input`` / ``preferred_output`` / ``non_preferred_output``)
become `PreferencePair`s: the input rendered once as the prompt, then each output, so both
sequences share the prompt's tokens and only the output (and its end-of-turn) is a target.

Batches come in two shapes. `pack` concatenates examples into one padding-free row: position
ids restart at 0 for every example and `cu_seq_lens` marks the boundaries, so attention never
crosses from one example into another (see trainer.modeling). `pad` right-pads examples into
rows of the longest length with an attention mask: the common dynamic-padding path.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from trainer.hashing import sha256_file

IGNORE_INDEX = -100
ROLES = ("system", "user", "assistant", "developer", "tool")


class DataFileError(ValueError):
    """A training file that cannot be used; `problems` maps line numbers to what is wrong."""

    def __init__(self, path: str, problems: dict[int, str]) -> None:
        self.path = path
        self.problems = problems
        shown = "; ".join(f"line {line}: {why}" for line, why in sorted(problems.items())[:10])
        super().__init__(f"{path}: {len(problems)} bad line(s): {shown}")

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled as its arguments: a run on other processes (Ray Train workers) raises it
        # back in the process that reports the job's error.
        return (type(self), (self.path, self.problems))


@dataclass(frozen=True)
class TokenizedExample:
    input_ids: tuple[int, ...]
    trained: tuple[bool, ...]
    line_number: int
    messages: tuple[dict[str, Any], ...] = field(default=(), compare=False, repr=False)

    @property
    def n_tokens(self) -> int:
        return len(self.input_ids)

    @property
    def n_target_tokens(self) -> int:
        return sum(self.trained[1:])

    def targets(self) -> list[int]:
        """The next token wherever it is trained, else IGNORE_INDEX; nothing after the last."""
        ids, trained = self.input_ids, self.trained
        return [ids[i + 1] if trained[i + 1] else IGNORE_INDEX for i in range(len(ids) - 1)] + [
            IGNORE_INDEX
        ]


@dataclass(frozen=True)
class TokenizedDataset:
    path: str
    examples: list[TokenizedExample]
    too_long_lines: list[int]

    @property
    def n_tokens(self) -> int:
        return sum(example.n_tokens for example in self.examples)


def _parse_lines(
    path: str | os.PathLike[str],
) -> tuple[list[tuple[int, dict[str, Any]]], dict[int, str]]:
    records: list[tuple[int, dict[str, Any]]] = []
    problems: dict[int, str] = {}
    with open(path, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                problems[line_number] = f"invalid JSON ({error.msg})"
                continue
            if not isinstance(record, dict):
                problems[line_number] = "not a JSON object"
                continue
            records.append((line_number, record))
    return records, problems


def read_jsonl(path: str | os.PathLike[str]) -> list[tuple[int, dict[str, Any]]]:
    """(line number, record) for every non-blank line; DataFileError names each bad line."""
    records, problems = _parse_lines(path)
    if problems:
        raise DataFileError(str(path), problems)
    return records


def to_messages(record: dict[str, Any]) -> list[dict[str, Any]]:
    """Chat records as they are; prompt/completion records as one user and one assistant turn."""
    if "messages" in record:
        messages = record["messages"]
        if not isinstance(messages, list) or not messages:
            raise ValueError("'messages' must be a non-empty list")
        for message in messages:
            if not isinstance(message, dict) or message.get("role") not in ROLES:
                raise ValueError(f"each message needs a role among {ROLES}")
            if not isinstance(message.get("content"), str):
                raise ValueError("each message needs string content")
            if message.get("weight", 1) not in (0, 1):
                raise ValueError("message weight must be 0 or 1")
        if not any(m["role"] == "assistant" and m.get("weight", 1) == 1 for m in messages):
            raise ValueError("no assistant message to train on")
        return messages
    if isinstance(record.get("prompt"), str) and isinstance(record.get("completion"), str):
        return [
            {"role": "user", "content": record["prompt"]},
            {"role": "assistant", "content": record["completion"]},
        ]
    raise ValueError("expected {'messages': [...]} or {'prompt': ..., 'completion': ...}")


def render_chat(
    tokenizer: PreTrainedTokenizerBase,
    messages: Sequence[dict[str, Any]],
    *,
    add_generation_prompt: bool,
) -> str:
    plain = [{"role": m["role"], "content": m["content"]} for m in messages]
    return tokenizer.apply_chat_template(
        plain, tokenize=False, add_generation_prompt=add_generation_prompt
    )


def chat_segments(
    tokenizer: PreTrainedTokenizerBase, messages: Sequence[dict[str, Any]]
) -> list[tuple[str, bool]]:
    """The rendered conversation cut into (text, trained) pieces.

    Relies on the template rendering every prefix of a conversation as a prefix of the whole,
    which chat templates do; one that does not is refused rather than mis-masked.
    """
    eos = tokenizer.eos_token
    full = render_chat(tokenizer, messages, add_generation_prompt=False)
    segments: list[tuple[str, bool]] = []
    cursor = 0
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prompt = render_chat(tokenizer, messages[:index], add_generation_prompt=True)
        through = render_chat(tokenizer, messages[: index + 1], add_generation_prompt=False)
        if not (full.startswith(prompt) and full.startswith(through) and len(prompt) >= cursor):
            raise ValueError("the chat template does not render conversations prefix by prefix")
        reply = through[len(prompt) :].rstrip()
        trained = message.get("weight", 1) == 1
        segments.append((full[cursor : len(prompt)], False))
        segments.append((reply, trained))
        cursor = len(prompt) + len(reply)
        if not reply.endswith(eos):
            # The template closes turns without EOS; training on an added one teaches stopping.
            segments.append((eos, trained))
    return [(text, trained) for text, trained in segments if text]


def tokenize_messages(
    tokenizer: PreTrainedTokenizerBase, messages: Sequence[dict[str, Any]], *, line_number: int = 0
) -> TokenizedExample:
    input_ids: list[int] = []
    trained: list[bool] = []
    for text, is_trained in chat_segments(tokenizer, messages):
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        input_ids.extend(ids)
        trained.extend([is_trained] * len(ids))
    return TokenizedExample(tuple(input_ids), tuple(trained), line_number, tuple(messages))


@dataclass(frozen=True)
class PreferencePair:
    """One preference example: the prompt with its preferred output (``chosen``) and with its
    non-preferred one (``rejected``), each trained on its last assistant turn only."""

    chosen: TokenizedExample
    rejected: TokenizedExample
    line_number: int

    @property
    def n_tokens(self) -> int:
        return self.chosen.n_tokens + self.rejected.n_tokens

    @property
    def n_target_tokens(self) -> int:
        return self.chosen.n_target_tokens + self.rejected.n_target_tokens

    @property
    def prompt(self) -> tuple[dict[str, Any], ...]:
        return self.chosen.messages[:-1]


@dataclass(frozen=True)
class PreferenceDataset:
    path: str
    pairs: list[PreferencePair]
    too_long_lines: list[int]


def is_preference_record(record: dict[str, Any]) -> bool:
    return "preferred_output" in record or "non_preferred_output" in record


def _output_content(record: dict[str, Any], key: str) -> str:
    output = record.get(key)
    if not (isinstance(output, list) and len(output) == 1 and isinstance(output[0], dict)):
        raise ValueError(f"'{key}' must be a list of one assistant message")
    if output[0].get("role") != "assistant" or not isinstance(output[0].get("content"), str):
        raise ValueError(f"'{key}' must hold an assistant message with string content")
    return output[0]["content"]


def preference_messages(record: dict[str, Any]) -> tuple[list[dict[str, Any]], str, str]:
    """(the prompt's messages, the preferred and the non-preferred output's text)."""
    given = record.get("input")
    if not isinstance(given, dict) or not isinstance(given.get("messages"), list):
        raise ValueError("a preference example needs {'input': {'messages': [...]}}")
    prompt = given["messages"]
    if not prompt:
        raise ValueError("'input.messages' must not be empty")
    for message in prompt:
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            raise ValueError(f"each message needs a role among {ROLES}")
        if not isinstance(message.get("content"), str):
            raise ValueError("each message needs string content")
    return (
        prompt,
        _output_content(record, "preferred_output"),
        _output_content(record, "non_preferred_output"),
    )


def tokenize_preference(
    tokenizer: PreTrainedTokenizerBase, record: dict[str, Any], *, line_number: int = 0
) -> PreferencePair:
    prompt, preferred, non_preferred = preference_messages(record)
    # Assistant turns of the input are context, never targets.
    context = [
        {
            "role": m["role"],
            "content": m["content"],
            **({"weight": 0} if m["role"] == "assistant" else {}),
        }
        for m in prompt
    ]

    def with_output(text: str) -> TokenizedExample:
        messages = [*context, {"role": "assistant", "content": text}]
        return tokenize_messages(tokenizer, messages, line_number=line_number)

    return PreferencePair(with_output(preferred), with_output(non_preferred), line_number)


def tokenize_preference_file(
    path: str | os.PathLike[str], tokenizer: PreTrainedTokenizerBase, *, max_seq_len: int
) -> PreferenceDataset:
    """Every pair of a preference JSONL file; a pair whose longer sequence is over
    `max_seq_len` tokens is left out and listed. A chat or prompt/completion line is refused:
    DPO learns from preferences only."""
    pairs: list[PreferencePair] = []
    too_long: list[int] = []
    records, problems = _parse_lines(path)
    for line_number, record in records:
        if not is_preference_record(record):
            problems[line_number] = "not a preference example (DPO needs preference data)"
            continue
        try:
            pair = tokenize_preference(tokenizer, record, line_number=line_number)
        except ValueError as error:
            problems[line_number] = str(error)
            continue
        if max(pair.chosen.n_tokens, pair.rejected.n_tokens) > max_seq_len:
            too_long.append(line_number)
        else:
            pairs.append(pair)
    if problems:
        raise DataFileError(str(path), problems)
    if not pairs:
        raise DataFileError(str(path), {0: f"no pair fits in max_seq_len={max_seq_len}"})
    return PreferenceDataset(path=str(path), pairs=pairs, too_long_lines=too_long)


def tokenize_file(
    path: str | os.PathLike[str], tokenizer: PreTrainedTokenizerBase, *, max_seq_len: int
) -> TokenizedDataset:
    """Every example of a JSONL file; those over `max_seq_len` tokens are left out and listed."""
    examples: list[TokenizedExample] = []
    too_long: list[int] = []
    records, problems = _parse_lines(path)
    for line_number, record in records:
        if is_preference_record(record):
            problems[line_number] = "a preference example: train it with method 'dpo'"
            continue
        try:
            messages = to_messages(record)
            example = tokenize_messages(tokenizer, messages, line_number=line_number)
        except ValueError as error:
            problems[line_number] = str(error)
            continue
        if example.n_tokens > max_seq_len:
            too_long.append(line_number)
        else:
            examples.append(example)
    if problems:
        raise DataFileError(str(path), problems)
    if not examples:
        raise DataFileError(str(path), {0: f"no example fits in max_seq_len={max_seq_len}"})
    return TokenizedDataset(path=str(path), examples=examples, too_long_lines=too_long)


@dataclass
class Batch:
    input_ids: torch.Tensor
    position_ids: torch.Tensor
    targets: torch.Tensor
    attention_mask: torch.Tensor | None
    cu_seq_lens: torch.Tensor | None
    n_tokens: int
    n_target_tokens: int

    def to(self, device: torch.device | str) -> Batch:
        def move(tensor: torch.Tensor | None) -> torch.Tensor | None:
            return None if tensor is None else tensor.to(device, non_blocking=True)

        return Batch(
            input_ids=move(self.input_ids),
            position_ids=move(self.position_ids),
            targets=move(self.targets),
            attention_mask=move(self.attention_mask),
            cu_seq_lens=move(self.cu_seq_lens),
            n_tokens=self.n_tokens,
            n_target_tokens=self.n_target_tokens,
        )


def pack(examples: Sequence[TokenizedExample]) -> Batch:
    """One row holding all examples back to back, with per-example positions and boundaries."""
    input_ids: list[int] = []
    positions: list[int] = []
    targets: list[int] = []
    boundaries = [0]
    for example in examples:
        input_ids.extend(example.input_ids)
        positions.extend(range(example.n_tokens))
        targets.extend(example.targets())
        boundaries.append(boundaries[-1] + example.n_tokens)
    return Batch(
        input_ids=torch.tensor([input_ids]),
        position_ids=torch.tensor([positions]),
        targets=torch.tensor([targets]),
        attention_mask=None,
        cu_seq_lens=torch.tensor(boundaries, dtype=torch.int32),
        n_tokens=len(input_ids),
        n_target_tokens=sum(example.n_target_tokens for example in examples),
    )


def pad(examples: Sequence[TokenizedExample], *, pad_token_id: int) -> Batch:
    """Rows right-padded to the longest example, with a padding mask."""
    width = max(example.n_tokens for example in examples)
    input_ids = torch.full((len(examples), width), pad_token_id)
    targets = torch.full((len(examples), width), IGNORE_INDEX)
    attention_mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, example in enumerate(examples):
        input_ids[row, : example.n_tokens] = torch.tensor(example.input_ids)
        targets[row, : example.n_tokens] = torch.tensor(example.targets())
        attention_mask[row, : example.n_tokens] = 1
    return Batch(
        input_ids=input_ids,
        position_ids=torch.arange(width).expand(len(examples), width).clone(),
        targets=targets,
        attention_mask=attention_mask,
        cu_seq_lens=None,
        n_tokens=sum(example.n_tokens for example in examples),
        n_target_tokens=sum(example.n_target_tokens for example in examples),
    )


def plan_micro_batches(
    examples: Sequence[TokenizedExample], *, max_tokens: int, packing: bool
) -> list[list[TokenizedExample]]:
    """Split one optimizer step's examples into forward passes of at most `max_tokens` tokens.

    Packed: first-fit decreasing on example length. Padded: longest first, each pass holding
    as many rows as fit when every row costs the longest row's length.
    """
    ordered = sorted(examples, key=lambda example: -example.n_tokens)
    if packing:
        bins: list[list[TokenizedExample]] = []
        room: list[int] = []
        for example in ordered:
            for index, free in enumerate(room):
                if example.n_tokens <= free:
                    bins[index].append(example)
                    room[index] -= example.n_tokens
                    break
            else:
                bins.append([example])
                room.append(max_tokens - example.n_tokens)
        return bins
    groups: list[list[TokenizedExample]] = []
    for example in ordered:
        if groups and (len(groups[-1]) + 1) * groups[-1][0].n_tokens <= max_tokens:
            groups[-1].append(example)
        else:
            groups.append([example])
    return groups


def make_batch(examples: Sequence[TokenizedExample], *, packing: bool, pad_token_id: int) -> Batch:
    return pack(examples) if packing else pad(examples, pad_token_id=pad_token_id)


def dataset_fingerprint(path: str | os.PathLike[str]) -> dict[str, Any]:
    file = Path(path)
    return {"path": str(file), "sha256": sha256_file(file), "bytes": file.stat().st_size}
