"""The one small interface every inference backend implements.

The gateway resolves a request to a `GenerationRequest` (the base model's directory, the
adapter with its registered sha256, the chat messages and the sampling settings) after
authorization and limits, and hands it to the backend selected by settings. A backend
streams `GenerationChunk`s; the last one carries `finish_reason`. Closing the async
iterator early (a client that went away) must stop the generation.

No web framework and no database here: a backend sees files and tensors only.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

FinishReason = Literal["stop", "length"]


class BackendError(Exception):
    """A backend refusal with a machine-readable code (catalogued in gateway.error_codes)."""

    def __init__(self, code: str, message: str, *, status: int = 500) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


@dataclass(frozen=True)
class AdapterRef:
    """A registered LoRA adapter: where its files are and the sha256 the registry holds."""

    name: str  # the model id (ft:...) or checkpoint id the caller asked for
    path: str  # the adapter's directory (fsspec-style path under ARTIFACT_DIR)
    sha256: str  # ModelVersion.adapter_sha256; re-checked by the backend when it loads


@dataclass(frozen=True)
class ChatMessage:
    role: Literal["system", "user", "assistant"]
    content: str


@dataclass(frozen=True)
class GenerationRequest:
    base_model: str  # the registered base model's name
    base_model_dir: str  # its directory (with the manifest the registry hashed)
    adapter: AdapterRef | None  # None: the base model itself
    messages: Sequence[ChatMessage]
    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    stop: Sequence[str] = field(default_factory=tuple)
    seed: int | None = None


@dataclass(frozen=True)
class GenerationChunk:
    text: str  # new text since the previous chunk (may be "")
    completion_tokens: int  # tokens generated so far, cumulative
    finish_reason: FinishReason | None = None  # set on the last chunk only


@runtime_checkable
class InferenceBackend(Protocol):
    """What the gateway needs of a backend: count the prompt, stream the completion."""

    name: str

    def prompt_tokens(self, request: GenerationRequest) -> int:
        """Tokens of the prompt as the model sees it (chat template applied)."""
        ...

    def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        """Stream the completion. `aclose()` on the iterator stops the generation."""
        ...

    async def close(self) -> None:
        """Release models and worker threads (gateway shutdown)."""
        ...
