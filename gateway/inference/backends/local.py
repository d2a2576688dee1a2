"""The embedded backend: transformers + peft on the CPU or a GPU, in this process.

One worker thread owns every model: the event loop only hands it requests and reads the
chunks it streams back, so a long generation never blocks the gateway. The worker

* loads each base model once (trainer.base_models: the manifest is verified first);
* keeps up to ``adapter_cache`` LoRA adapters per base model attached, hash-checked against
  the registry as they load (local_adapters);
* renders the prompt with the tokenizer's chat template exactly as training does
  (trainer.data.render_chat with a generation prompt, local_text);
* batches the requests for one base model, whatever their adapters, with continuous
  batching: a request that arrives while a batch runs joins it at the next step, and a
  finished or cancelled one leaves it at once (local_batch);
* samples per request (temperature 0 is greedy, top_p, a seeded generator per request), stops
  on EOS or a stop string (the stop text is not returned) or ``max_tokens``.

An idle worker waits up to ``batch_window_ms`` for company before the first prefill, while
requests overlap (one did in the last OVERLAP_MEMORY_S); a client whose requests come one
after another has none to wait for, and its requests start at once.
Chunks go back to the caller's event loop at most every ``stream_interval_ms`` per request
(the first and the last at once), the tokens between merged into one chunk: each wake-up of
the event loop is a GIL hand-over between the two threads, a noticeable share of a small
model's step on a CPU.

Closing the async iterator marks the request cancelled; the worker drops it before the next
step, so a client that went away costs at most one more step.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import structlog
import torch
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from gateway.inference.backends.base import BackendError, GenerationChunk, GenerationRequest
from gateway.inference.backends.local_adapters import (
    BASE_ADAPTER,
    AdapterCache,
    adapter_files,
    adapter_sha256,
)
from gateway.inference.backends.local_batch import Batch, Job, Row
from gateway.inference.backends.local_stats import BackendStats
from gateway.inference.backends.local_text import render_prompt
from trainer.base_models import ManifestError, load_base_model

__all__ = [
    "BASE_ADAPTER",
    "BackendStats",
    "LocalBackend",
    "adapter_files",
    "adapter_sha256",
    "make_backend",
    "render_prompt",
]

log = structlog.get_logger(__name__)

# An idle worker waits for company only if requests overlapped this recently.
OVERLAP_MEMORY_S = 1.0


def make_backend(settings: Any) -> LocalBackend:
    """The factory gateway.inference.backends.make_backend calls for ``inference_backend=local``."""
    return LocalBackend.from_settings(settings)


class LocalBackend:
    """transformers + peft in a dedicated worker thread; see the module docstring."""

    name = "local"

    def __init__(
        self,
        *,
        adapter_cache: int = 8,
        batch_window_ms: float = 5.0,
        max_batch: int = 16,
        device: str = "auto",
        stream_interval_ms: float = 5.0,
    ) -> None:
        if adapter_cache < 1 or max_batch < 1:
            raise ValueError("adapter_cache and max_batch must be at least 1")
        self.adapter_cache = adapter_cache
        self.batch_window = batch_window_ms / 1000.0
        self.max_batch = max_batch
        self.stream_interval = stream_interval_ms / 1000.0
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.dtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32
        self.stats = BackendStats()
        self._inbox: queue.Queue[Job | None] = queue.Queue()
        self._pending: list[Job] = []
        self._outbox: dict[asyncio.AbstractEventLoop, list[tuple[Job, Any]]] = {}
        self._bases: dict[str, Batch] = {}
        self._tokenizers: dict[str, PreTrainedTokenizerBase] = {}
        self._tokenizer_lock = threading.Lock()
        self._overlapped = float("-inf")  # when two requests last ran (or came) together
        self._closed = False
        self._thread = threading.Thread(
            target=self._run, name="tunegate-local-backend", daemon=True
        )
        self._thread.start()

    @classmethod
    def from_settings(cls, settings: Any) -> LocalBackend:
        return cls(
            adapter_cache=settings.inference_adapter_cache,
            batch_window_ms=settings.inference_batch_window_ms,
            max_batch=settings.inference_max_batch,
            device=settings.inference_device,
        )

    # --- the interface ------------------------------------------------------------------

    def prompt_tokens(self, request: GenerationRequest) -> int:
        """Counted with a tokenizer of its own (the worker's is never shared across threads)."""
        key = str(Path(request.base_model_dir).resolve())
        with self._tokenizer_lock:
            tokenizer = self._tokenizers.get(key)
            if tokenizer is None:
                tokenizer = AutoTokenizer.from_pretrained(key, local_files_only=True)
                self._tokenizers[key] = tokenizer
            return len(render_prompt(tokenizer, request))

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        if self._closed:
            raise BackendError(
                code="backend_unavailable", message="the local backend is closed", status=503
            )
        job = Job(request=request, loop=asyncio.get_running_loop(), inbox=asyncio.Queue())
        self._inbox.put(job)
        try:
            while True:
                item = await job.inbox.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
                if item.finish_reason is not None:
                    return
        finally:
            job.cancelled.set()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._inbox.put(None)
        await asyncio.to_thread(self._thread.join)

    # --- the worker ---------------------------------------------------------------------

    def _run(self) -> None:
        torch.set_grad_enabled(False)
        while True:
            if not self._collect():
                break
            try:
                self._admit()
                for batch in list(self._bases.values()):
                    if batch.rows:
                        batch.step()
            except Exception as error:  # a bug or out of memory: no client waits forever
                log.exception("inference.local.worker_error", error=type(error).__name__)
                failure = BackendError(
                    code="backend_unavailable",
                    message=f"the local backend failed ({type(error).__name__}); retry later",
                    status=503,
                )
                failure.__cause__ = error
                self._fail_everything(failure)
            self._flush()
        self._fail_everything(
            BackendError(code="backend_unavailable", message="the backend closed", status=503)
        )
        self._flush()

    def _busy(self) -> bool:
        return any(batch.rows for batch in self._bases.values())

    def _collect(self) -> bool:
        """Move new jobs to the pending list; False once close() was called.

        Idle, it blocks for the first job, then waits `batch_window` for company if
        requests have been overlapping; while a batch runs it only takes what has already
        arrived."""
        busy = self._busy()
        try:
            if not busy:
                if not self._pending:
                    job = self._inbox.get()
                    if job is None:
                        return False
                    self._pending.append(job)
                now = time.perf_counter()
                overlapping = now - self._overlapped <= OVERLAP_MEMORY_S
                deadline = now + (self.batch_window if overlapping else 0.0)
                while len(self._pending) < self.max_batch:
                    remaining = deadline - time.perf_counter()
                    if remaining <= 0:
                        break
                    job = self._inbox.get(timeout=remaining)
                    if job is None:
                        return False
                    self._pending.append(job)
            while True:
                job = self._inbox.get_nowait()
                if job is None:
                    return False
                self._pending.append(job)
        except queue.Empty:
            pass
        if not busy and self._pending and all(j.cancelled.is_set() for j in self._pending):
            self._pending.clear()
        return True

    def _fail_everything(self, error: BaseException) -> None:
        for batch in self._bases.values():
            batch.clear(error)
        for job in self._pending:
            self._send(job, error)
        self._pending.clear()

    def _send(self, job: Job, item: GenerationChunk | BaseException) -> None:
        self._outbox.setdefault(job.loop, []).append((job, item))

    def _flush(self) -> None:
        """Hand the chunks waiting for each event loop over, one wake-up per loop: when a
        request's first or last chunk is there, when one waited `stream_interval`, and
        everything once the worker goes idle."""
        idle = not self._busy()
        now = time.perf_counter()
        outbox, self._outbox = self._outbox, {}
        for loop, items in outbox.items():
            if not (idle or any(_due(job, item, now, self.stream_interval) for job, item in items)):
                self._outbox[loop] = items
                continue
            for job, _ in items:
                job.delivered = now
            try:
                loop.call_soon_threadsafe(_deliver, _coalesce(items))
            except RuntimeError:  # the caller's event loop is gone
                for job, _ in items:
                    job.cancelled.set()

    # --- admission: base models, adapters, prefill ---------------------------------------

    def _admit(self) -> None:
        waiting: list[Job] = []
        admitted: dict[str, list[Row]] = {}
        for job in self._pending:
            if job.cancelled.is_set():
                continue
            try:
                batch = self._batch(job.request)
                key = str(Path(job.request.base_model_dir).resolve())
                rows = admitted.setdefault(key, [])
                if len(batch.rows) + len(rows) >= self.max_batch:
                    waiting.append(job)
                    continue
                adapter = batch.adapters.lookup(job.request.adapter)
                if adapter is None:  # every cached adapter is busy: wait for one to free
                    waiting.append(job)
                    continue
                rows.append(batch.row(job, adapter))
            except BackendError as error:
                self._send(job, error)
        self._pending = waiting
        for key, rows in admitted.items():
            if rows:
                batch = self._bases[key]
                if len(rows) + len(batch.rows) > 1:
                    self._overlapped = time.perf_counter()
                batch.prefill(rows)

    def _batch(self, request: GenerationRequest) -> Batch:
        """The base model's batch, the model loaded on first use."""
        key = str(Path(request.base_model_dir).resolve())
        batch = self._bases.get(key)
        if batch is not None:
            return batch
        try:
            loaded = load_base_model(key, device=self.device, dtype=self.dtype)
        except (ManifestError, OSError, ValueError) as error:
            log.error("inference.base_model_unloadable", base_model=request.base_model)
            raise BackendError(
                code="base_model_unavailable",
                message=f"base model {request.base_model!r} cannot be loaded: {error}",
                status=503,
            ) from error
        adapters = AdapterCache(
            loaded.model, capacity=self.adapter_cache, device=self.device, stats=self.stats
        )
        batch = Batch(loaded, adapters=adapters, emit=self._send, stats=self.stats)
        self._bases[key] = batch
        return batch


def _due(job: Job, item: Any, now: float, interval: float) -> bool:
    """Whether `item` should reach its caller now rather than with the next ones."""
    if isinstance(item, BaseException) or item.finish_reason is not None:
        return True
    return job.delivered is None or now - job.delivered >= interval


def _coalesce(items: list[tuple[Job, Any]]) -> list[tuple[Job, Any]]:
    """The chunks of one request that waited together as one (texts joined, the last one's
    count). The final chunk stays as the worker made it, and so does an error."""
    out: list[tuple[Job, Any]] = []
    open_at: dict[int, int] = {}  # id(job) -> index in `out` of a chunk still open to merge
    for job, item in items:
        at = open_at.pop(id(job), None)
        if isinstance(item, GenerationChunk) and item.finish_reason is None:
            if at is not None:
                merged = GenerationChunk(out[at][1].text + item.text, item.completion_tokens)
                out[at] = (job, merged)
                open_at[id(job)] = at
                continue
            open_at[id(job)] = len(out)
        out.append((job, item))
    return out


def _deliver(items: list[tuple[Job, Any]]) -> None:
    for job, item in items:
        job.inbox.put_nowait(item)
