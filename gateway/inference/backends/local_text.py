"""The local backend's text: the prompt rendered as training renders it, and a completion
decoded one token at a time, with its stop strings.

A completion streams only what is certain: not an incomplete UTF-8 character (a byte-level
tokenizer may need the next token to finish it), nor a tail that may turn out to be the start
of a stop string; a stop string ends it and is not returned."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from transformers import PreTrainedTokenizerBase

from gateway.inference.backends.base import FinishReason, GenerationRequest
from trainer.data import render_chat

Decode = Callable[[list[int]], str]


def render_prompt(tokenizer: PreTrainedTokenizerBase, request: GenerationRequest) -> list[int]:
    """The prompt's token ids: the chat template with a generation prompt, as in training."""
    messages = [{"role": m.role, "content": m.content} for m in request.messages]
    text = render_chat(tokenizer, messages, add_generation_prompt=True)
    ids: list[int] = tokenizer(text, add_special_tokens=False)["input_ids"]
    return ids


def decoder(tokenizer: PreTrainedTokenizerBase) -> Decode:
    """Token ids to text, special tokens skipped: the Rust tokenizer directly when there is
    one (the Python wrapper costs more than the decoding at one token a step)."""
    fast = getattr(tokenizer, "backend_tokenizer", None)
    if fast is not None and not getattr(tokenizer, "clean_up_tokenization_spaces", False):

        def decode_fast(ids: list[int]) -> str:
            text: str = fast.decode(ids, skip_special_tokens=True)
            return text

        return decode_fast

    def decode(ids: list[int]) -> str:
        text = tokenizer.decode(ids, skip_special_tokens=True)
        return text if isinstance(text, str) else "".join(text)

    return decode


@dataclass
class Completion:
    """One request's completion so far: its token ids, their text and what was streamed."""

    max_tokens: int
    stops: tuple[str, ...]
    ids: list[int] = field(default_factory=list)
    text: str = ""  # decoded so far (incrementally: see _catch_up)
    sent: int = 0  # characters of `text` already streamed
    prefix_offset: int = 0
    read_offset: int = 0

    def push(self, token: int, *, eos: bool, decode: Decode) -> tuple[str, FinishReason | None]:
        """Take the next token: the text that may be streamed now, and why the completion
        ended (None while it goes on). An EOS token counts but adds no text."""
        reason: FinishReason | None = None
        self.ids.append(token)
        if eos:
            reason = "stop"
            text = self._catch_up(decode, final=True)
            end = len(text)
        else:
            final = len(self.ids) >= self.max_tokens
            text = self._catch_up(decode, final=final)
            end = len(text)
            hit = _first_stop(text, self.stops, max(0, self.sent - _longest(self.stops)))
            if hit is not None:
                reason, end = "stop", hit
            elif final:
                reason = "length"
            else:
                end = _safe_end(text, self.stops)
        piece = text[self.sent : end] if end > self.sent else ""
        self.sent = max(self.sent, end)
        return piece, reason

    def _catch_up(self, decode: Decode, *, final: bool) -> str:
        """`text` brought up to date with the newest token, decoding a short window only:
        the ids since the last complete character (what a byte-level tokenizer needs to
        finish a multi-byte character) rather than the whole completion every step."""
        prefix = decode(self.ids[self.prefix_offset : self.read_offset])
        window = decode(self.ids[self.prefix_offset :])
        if len(window) > len(prefix) and (final or not window.endswith("\ufffd")):
            self.text += window[len(prefix) :]
            self.prefix_offset, self.read_offset = self.read_offset, len(self.ids)
        return self.text


def _longest(stops: Sequence[str]) -> int:
    return max((len(s) for s in stops), default=0)


def _first_stop(text: str, stops: Sequence[str], start: int) -> int | None:
    hits = [i for i in (text.find(s, start) for s in stops) if i >= 0]
    return min(hits) if hits else None


def _safe_end(text: str, stops: Sequence[str]) -> int:
    """How much of `text` can be streamed now: not an incomplete UTF-8 tail (decoded as
    U+FFFD), nor a tail that may turn out to be the start of a stop string."""
    end = len(text)
    while end and text[end - 1] == "\ufffd":
        end -= 1
    held = 0
    for stop in stops:
        for size in range(min(len(stop) - 1, end), held, -1):
            if text[end - size : end] == stop[:size]:
                held = size
                break
    return end - held
