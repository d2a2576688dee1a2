"""A backend that answers at once: it echoes the last user message back, word by word.

For tests and for measuring what the gateway itself costs per call (authorization, limits,
audit) with no model behind it. A word is a token; a chat template costs 3 tokens a
message. ``max_tokens`` and ``stop`` are honoured, so limits and finish reasons behave as
with a model."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

from gateway.inference.backends.base import FinishReason, GenerationChunk, GenerationRequest

TEMPLATE_TOKENS_PER_MESSAGE = 3


def _words(text: str) -> list[str]:
    return text.split()


class NoopBackend:
    name = "noop"

    def prompt_tokens(self, request: GenerationRequest) -> int:
        return sum(
            TEMPLATE_TOKENS_PER_MESSAGE + len(_words(message.content))
            for message in request.messages
        )

    def completion_words(self, request: GenerationRequest) -> list[str]:
        last = next((m.content for m in reversed(request.messages) if m.role == "user"), "ok")
        return _words(last) or ["ok"]

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        words = self.completion_words(request)
        sent = ""
        for count, word in enumerate(words[: request.max_tokens], start=1):
            piece = word if count == 1 else f" {word}"
            cut = _stop_at(sent + piece, request.stop)
            if cut is not None:
                yield GenerationChunk(cut[len(sent) :], count - 1, finish_reason="stop")
                return
            sent += piece
            last = count == min(len(words), request.max_tokens)
            finish: FinishReason | None = None
            if last:
                finish = "length" if len(words) > request.max_tokens else "stop"
            yield GenerationChunk(piece, count, finish_reason=finish)

    async def close(self) -> None:
        return None


def _stop_at(text: str, stops: Sequence[str]) -> str | None:
    """``text`` cut before the first stop sequence it holds, or None."""
    positions = [text.find(stop) for stop in stops if stop and stop in text]
    return text[: min(positions)] if positions else None
