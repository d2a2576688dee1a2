"""The local backend's batch: the requests decoding together on one base model.

A step loop with left padding and one KV cache for the batch. Rows may run on different
adapters (peft's mixed-adapter forward, ``adapter_names=``). Newly prefilled rows join the
running batch before its next step (continuous batching), and a finished or cancelled row
leaves it at once, the cache cut to the longest live row.

Sampling is per row: temperature 0 is greedy, else top_p with a seeded generator per request.
The model runs in torch's inference mode (no autograd bookkeeping at all, which is most of a
small model's per-step cost on a CPU).

Used by the worker thread only; chunks go out through the ``emit`` callback."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from transformers import DynamicCache, PreTrainedTokenizerBase

from gateway.inference.backends.base import GenerationChunk, GenerationRequest
from gateway.inference.backends.local_adapters import AdapterCache
from gateway.inference.backends.local_stats import BackendStats
from gateway.inference.backends.local_text import Completion, decoder, render_prompt
from trainer.base_models import LoadedBaseModel


@dataclass(eq=False)
class Job:
    """One request on its way through the worker, and the caller's loop and queue that its
    chunks go to (delivered by the worker, see LocalBackend._flush)."""

    request: GenerationRequest
    loop: asyncio.AbstractEventLoop
    inbox: asyncio.Queue[GenerationChunk | BaseException]
    cancelled: threading.Event = field(default_factory=threading.Event)
    submitted: float = field(default_factory=time.perf_counter)
    delivered: float | None = None  # when its chunks last went to its loop


Emit = Callable[[Job, GenerationChunk | BaseException], None]


@dataclass(eq=False)
class Row:
    """A job admitted to a batch: its adapter, sampling state and completion."""

    job: Job
    adapter: str  # peft adapter name, or local_adapters.BASE_ADAPTER
    generator: torch.Generator | None
    completion: Completion
    finished: bool = False


class Batch:
    """A loaded base model, its adapters and the batch running on it."""

    def __init__(
        self, loaded: LoadedBaseModel, *, adapters: AdapterCache, emit: Emit, stats: BackendStats
    ) -> None:
        self.loaded = loaded
        self.adapters = adapters
        self.device: torch.device = adapters.device
        self.emit = emit
        self.stats = stats
        eos = loaded.model.generation_config.eos_token_id
        eos_ids = {loaded.tokenizer.eos_token_id}
        eos_ids.update(eos if isinstance(eos, list) else [eos])
        self.eos_ids = frozenset(i for i in eos_ids if i is not None)
        self.decode = decoder(loaded.tokenizer)
        self.rows: list[Row] = []
        self.cache: DynamicCache | None = None
        self.mask: torch.Tensor | None = None  # [rows, cached + 1]: covers the token fed next
        self.padded = False  # some row has padding: the mask goes to the model, else None
        self.next_tokens: list[int] = []

    @property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        return self.loaded.tokenizer

    @property
    def peft(self) -> Any:
        return self.adapters.peft

    def row(self, job: Job, adapter: str) -> Row:
        """A row for `job` on `adapter` (held in the adapter cache until the row leaves)."""
        request = job.request
        generator = None
        if request.temperature > 0:
            generator = torch.Generator(device=self.device)
            if request.seed is not None:
                generator.manual_seed(request.seed)
            else:
                generator.seed()
        self.adapters.acquire(adapter)
        completion = Completion(
            max_tokens=request.max_tokens, stops=tuple(s for s in request.stop if s)
        )
        return Row(job=job, adapter=adapter, generator=generator, completion=completion)

    def clear(self, error: BaseException) -> None:
        """Fail every row (the worker broke or closed) and start again empty."""
        for row in self.rows:
            self.emit(row.job, error)
        self.rows, self.cache, self.mask, self.next_tokens = [], None, None, []
        self.adapters.release_all()

    @torch.inference_mode()
    def prefill(self, rows: list[Row]) -> None:
        """Run the prompts of `rows` together, stream their first tokens, join the batch."""
        prompts = [render_prompt(self.tokenizer, row.job.request) for row in rows]
        width = max(len(ids) for ids in prompts)
        pad = self.tokenizer.pad_token_id or 0
        input_ids = torch.tensor(
            [[pad] * (width - len(ids)) + ids for ids in prompts], device=self.device
        )
        mask = torch.tensor(
            [[0] * (width - len(ids)) + [1] * len(ids) for ids in prompts], device=self.device
        )
        cache = DynamicCache(config=self.loaded.model.config)
        padded = bool((mask == 0).any())
        logits = self._forward(
            [r.adapter for r in rows], input_ids, mask if padded else None, cache
        )
        self.stats.prefills += 1
        tokens = _choose(logits, rows)
        for row, token in zip(rows, tokens, strict=True):
            if row.job.cancelled.is_set():
                row.finished = True
            else:
                self._advance(row, token)
        self._merge(rows, cache, mask, tokens)
        if any(row.finished for row in self.rows):
            self._drop_finished()

    @torch.inference_mode()
    def step(self) -> None:
        """One token for every running row (cancelled rows leave first)."""
        for row in self.rows:
            if row.job.cancelled.is_set():
                row.finished = True
        if any(row.finished for row in self.rows):
            self._drop_finished()
            if not self.rows:
                return
        assert self.cache is not None and self.mask is not None
        input_ids = torch.tensor(self.next_tokens, device=self.device).unsqueeze(-1)
        logits = self._forward(
            [r.adapter for r in self.rows],
            input_ids,
            self.mask if self.padded else None,
            self.cache,
        )
        self.stats.steps += 1
        self.next_tokens = _choose(logits, self.rows)
        self.mask = F.pad(self.mask, (0, 1), value=1)
        for row, token in zip(self.rows, self.next_tokens, strict=True):
            if row.job.cancelled.is_set():
                row.finished = True
            else:
                self._advance(row, token)
        if any(row.finished for row in self.rows):
            self._drop_finished()

    def _forward(
        self,
        adapters: Sequence[str],
        input_ids: torch.Tensor,
        mask: torch.Tensor | None,
        cache: DynamicCache,
    ) -> torch.Tensor:
        """Last-position logits; a batch on one adapter runs peft's plain path.

        No position ids: positions run over the padded width, so a left-padded row's are
        shifted by its padding, which rotary attention does not see (it scores relative
        positions only); explicit ones would send transformers down its packed-sequence
        mask path, many times slower per step. Without padding the mask is left out too."""
        kwargs = self.adapters.forward_kwargs(adapters)
        out = self.adapters.model(
            input_ids=input_ids,
            attention_mask=mask,
            cache=cache,
            use_cache=True,
            logits_to_keep=1,
            **kwargs,
        )
        logits: torch.Tensor = out.logits[:, -1, :].float()
        return logits

    def _advance(self, row: Row, token: int) -> None:
        completion = row.completion
        piece, reason = completion.push(token, eos=token in self.eos_ids, decode=self.decode)
        if reason is not None:
            row.finished = True
            self.emit(row.job, GenerationChunk(piece, len(completion.ids), reason))
        elif piece:
            self.emit(row.job, GenerationChunk(piece, len(completion.ids)))

    def _merge(
        self, rows: list[Row], cache: DynamicCache, mask: torch.Tensor, tokens: list[int]
    ) -> None:
        """Join newly prefilled rows to the running batch: both left-padded to one width."""
        if self.cache is None or self.mask is None or not self.rows:
            self.rows, self.cache, self.next_tokens = list(rows), cache, list(tokens)
            self.mask = F.pad(mask, (0, 1), value=1)
            self.padded = bool((mask == 0).any())
        else:
            old_mask = self.mask[:, :-1]  # the running rows' cached positions
            width = max(old_mask.shape[1], mask.shape[1])
            layers = []
            for (old_k, old_v), (new_k, new_v) in zip(_kv(self.cache), _kv(cache), strict=True):
                keys = torch.cat([_left_pad(old_k, width), _left_pad(new_k, width)])
                values = torch.cat([_left_pad(old_v, width), _left_pad(new_v, width)])
                layers.append((keys, values))
            self.cache = DynamicCache(ddp_cache_data=layers, config=self.loaded.model.config)
            joined = torch.cat([_left_pad(old_mask, width), _left_pad(mask, width)])
            self.mask = F.pad(joined, (0, 1), value=1)
            self.padded = bool((joined == 0).any())
            self.rows.extend(rows)
            self.next_tokens.extend(tokens)
        self.stats.max_rows = max(self.stats.max_rows, len(self.rows))

    def _drop_finished(self) -> None:
        keep = [i for i, row in enumerate(self.rows) if not row.finished]
        for row in self.rows:
            if row.finished:
                self.adapters.release(row.adapter)
        if not keep:
            self.rows, self.cache, self.mask, self.next_tokens = [], None, None, []
            return
        assert self.cache is not None and self.mask is not None
        index = torch.tensor(keep, device=self.device)
        mask = self.mask.index_select(0, index)
        # Columns every remaining row pads are cut, so the cache never grows past the
        # longest live request.
        start = int((mask.sum(0) == 0).long().cumprod(0).sum().item())
        layers = [
            (
                keys.index_select(0, index)[:, :, start:],
                values.index_select(0, index)[:, :, start:],
            )
            for keys, values in _kv(self.cache)
        ]
        self.cache = DynamicCache(ddp_cache_data=layers, config=self.loaded.model.config)
        self.mask = mask[:, start:]
        self.padded = bool((self.mask == 0).any())
        self.rows = [self.rows[i] for i in keep]
        self.next_tokens = [self.next_tokens[i] for i in keep]


def _choose(logits: torch.Tensor, rows: Sequence[Row]) -> list[int]:
    """One token per row: argmax for greedy rows, seeded nucleus sampling for the rest."""
    tokens = logits.argmax(-1)
    for index, row in enumerate(rows):
        request = row.job.request
        if request.temperature <= 0:
            continue
        probs = torch.softmax(logits[index] / request.temperature, dim=-1)
        if request.top_p < 1.0:
            ordered, order = probs.sort(descending=True)
            keep = (ordered.cumsum(0) - ordered) < request.top_p
            ordered = ordered * keep
            pick = torch.multinomial(ordered, 1, generator=row.generator)
            tokens[index] = order[pick[0]]
        else:
            tokens[index] = torch.multinomial(probs, 1, generator=row.generator)[0]
    chosen: list[int] = tokens.tolist()
    return chosen


def _kv(cache: DynamicCache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Each layer's keys and values, [batch, heads, positions, head_dim] (full-attention
    DynamicLayers: Llama-family models; sliding-window caches are not batched this way)."""
    layers: list[Any] = list(cache.layers)
    return [(layer.keys, layer.values) for layer in layers]


def _left_pad(tensor: torch.Tensor, width: int) -> torch.Tensor:
    """Zeros on the left of the sequence dimension (dim 1 of a mask, dim 2 of keys/values)."""
    missing = width - tensor.shape[1 if tensor.dim() == 2 else 2]
    if missing <= 0:
        return tensor
    pad = (missing, 0) if tensor.dim() == 2 else (0, 0, missing, 0)
    return F.pad(tensor, pad)
