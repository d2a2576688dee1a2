"""The embedded backend: transformers + peft on the CPU or a GPU, in this process.

One worker thread owns every model: the event loop only hands it requests and reads the
chunks it streams back, so a long generation never blocks the gateway. The worker

* loads each base model once (trainer.base_models: the manifest is verified first);
* keeps up to ``adapter_cache`` LoRA adapters per base model attached to it as named peft
  adapters, least recently used evicted first (never one a running request uses); each
  adapter's weights are read once, hashed as the registry hashes them
  (trainer.hashing.sha256_file of ``adapter_model.safetensors``) and loaded from the very
  bytes that were hashed, so what was checked is what runs;
* renders the prompt with the tokenizer's chat template exactly as training does
  (trainer.data.render_chat with a generation prompt);
* batches the requests for one base model, whatever their adapters (peft's mixed-adapter
  forward, ``adapter_names=``): a step loop with left padding and one KV cache for the batch,
  where a request that arrives while a batch runs is prefilled and joins it at the next step
  (continuous batching), and a finished or cancelled request leaves it at once;
* samples per request (temperature 0 is greedy, top_p, a seeded generator per request), stops
  on EOS or a stop string (the stop text is not returned) or ``max_tokens``.

Closing the async iterator marks the request cancelled; the worker drops it before the next
step, so a client that went away costs at most one more step.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import queue
import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
import torch
import torch.nn.functional as F
from peft import LoraConfig, PeftModel, get_peft_model, set_peft_model_state_dict
from peft.tuners.tuners_utils import BaseTunerLayer
from safetensors.torch import load as load_safetensors
from transformers import AutoTokenizer, DynamicCache, PreTrainedTokenizerBase

from gateway.inference.backends.base import (
    AdapterRef,
    BackendError,
    FinishReason,
    GenerationChunk,
    GenerationRequest,
)
from trainer.base_models import LoadedBaseModel, ManifestError, load_base_model
from trainer.checkpoints import ADAPTER_CONFIG, ADAPTER_WEIGHTS
from trainer.data import render_chat
from trainer.hashing import sha256_file

log = structlog.get_logger(__name__)

BASE_ADAPTER = "__base__"  # peft's name for "no adapter" in a mixed-adapter batch


def adapter_files(path: str | Path) -> tuple[Path, Path]:
    """The adapter's weights and config: ``path`` is the adapter directory itself or a run's
    artifact directory holding it in ``adapter/``."""
    directory = Path(path)
    if not (directory / ADAPTER_WEIGHTS).is_file() and (directory / "adapter").is_dir():
        directory = directory / "adapter"
    return directory / ADAPTER_WEIGHTS, directory / ADAPTER_CONFIG


def adapter_sha256(path: str | Path) -> str:
    """The adapter's identity as the registry computes it: sha256 of its weights file."""
    return sha256_file(adapter_files(path)[0])


def render_prompt(tokenizer: PreTrainedTokenizerBase, request: GenerationRequest) -> list[int]:
    """The prompt's token ids: the chat template with a generation prompt, as in training."""
    messages = [{"role": m.role, "content": m.content} for m in request.messages]
    text = render_chat(tokenizer, messages, add_generation_prompt=True)
    ids: list[int] = tokenizer(text, add_special_tokens=False)["input_ids"]
    return ids


# --- the worker's bookkeeping ----------------------------------------------------------


@dataclass
class _Job:
    """One request on its way through the worker, and the caller's loop and queue that its
    chunks go to (delivered by the worker once per step, see LocalBackend._flush)."""

    request: GenerationRequest
    loop: asyncio.AbstractEventLoop
    inbox: asyncio.Queue[GenerationChunk | BaseException]
    cancelled: threading.Event = field(default_factory=threading.Event)
    submitted: float = field(default_factory=time.perf_counter)


@dataclass
class _Row:
    """A job admitted to a batch: its adapter, sampling state and what it has sent."""

    job: _Job
    adapter: str  # peft adapter name, or BASE_ADAPTER
    prompt_len: int
    generator: torch.Generator | None
    stops: tuple[str, ...]
    ids: list[int] = field(default_factory=list)
    text: str = ""  # the completion decoded so far (incrementally: see _Row.decode)
    sent: int = 0  # characters of `text` already streamed
    prefix_offset: int = 0
    read_offset: int = 0
    finished: bool = False


@dataclass
class _Adapter:
    name: str  # the peft adapter (slot) holding it
    sha256: str
    signature: tuple[Any, ...]  # what must match for another adapter to reuse the slot
    params: dict[str, torch.Tensor]  # the slot's tensors by their name in the weights file
    in_use: int = 0


@dataclass
class _Base:
    """A loaded base model with its adapters and the batch running on it."""

    loaded: LoadedBaseModel
    device: torch.device
    eos_ids: frozenset[int]
    peft: PeftModel | None = None
    adapters: OrderedDict[tuple[str, str], _Adapter] = field(default_factory=OrderedDict)
    active: str | None = None  # the adapter peft has active (uniform batches skip the mix)
    tuner_layers: list[Any] | None = None  # peft's LoRA layers, found again after a change
    serial: int = 0
    rows: list[_Row] = field(default_factory=list)
    cache: DynamicCache | None = None
    mask: torch.Tensor | None = None  # [rows, cached + 1]: covers the token fed next
    padded: bool = False  # some row has padding: the mask goes to the model, else None
    next_tokens: list[int] = field(default_factory=list)

    @property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        return self.loaded.tokenizer

    def decode(self, ids: list[int]) -> str:
        """Token ids to text, special tokens skipped (the Rust tokenizer directly when there
        is one: the Python wrapper costs more than the decoding at one token a step)."""
        fast = getattr(self.loaded.tokenizer, "backend_tokenizer", None)
        if fast is not None and not getattr(
            self.loaded.tokenizer, "clean_up_tokenization_spaces", False
        ):
            text: str = fast.decode(ids, skip_special_tokens=True)
            return text
        return _decode(self.loaded.tokenizer, ids)

    @property
    def model(self) -> Any:
        return self.peft if self.peft is not None else self.loaded.model


@dataclass
class BackendStats:
    """What the worker did, for benchmarks and tests (read without a lock: counters only)."""

    steps: int = 0  # decode steps run (one per token of every running batch)
    prefills: int = 0
    max_rows: int = 0  # the largest batch seen
    adapter_hits: int = 0
    adapter_misses: int = 0
    adapter_evictions: int = 0
    adapter_slot_reuses: int = 0  # misses served by copying into an evicted adapter's slot
    swap_seconds_hit: list[float] = field(default_factory=list)
    swap_seconds_miss: list[float] = field(default_factory=list)
    activate_seconds: list[float] = field(default_factory=list)  # peft set_adapter


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
    ) -> None:
        if adapter_cache < 1 or max_batch < 1:
            raise ValueError("adapter_cache and max_batch must be at least 1")
        self.adapter_cache = adapter_cache
        self.batch_window = batch_window_ms / 1000.0
        self.max_batch = max_batch
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.dtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32
        self.stats = BackendStats()
        self._inbox: queue.Queue[_Job | None] = queue.Queue()
        self._pending: list[_Job] = []
        self._outbox: dict[asyncio.AbstractEventLoop, list[tuple[_Job, Any]]] = {}
        self._bases: dict[str, _Base] = {}
        self._tokenizers: dict[str, PreTrainedTokenizerBase] = {}
        self._tokenizer_lock = threading.Lock()
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
        job = _Job(request=request, loop=asyncio.get_running_loop(), inbox=asyncio.Queue())
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
                for base in list(self._bases.values()):
                    if base.rows:
                        self._step(base)
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

    def _collect(self) -> bool:
        """Move new jobs to the pending list; False once close() was called.

        Idle, it blocks for the first job and then waits `batch_window` for company; while a
        batch runs it only takes what has already arrived."""
        busy = any(base.rows for base in self._bases.values())
        try:
            if not busy:
                if not self._pending:
                    job = self._inbox.get()
                    if job is None:
                        return False
                    self._pending.append(job)
                deadline = time.perf_counter() + self.batch_window
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
        for base in self._bases.values():
            for row in base.rows:
                self._send(row.job, error)
            base.rows, base.cache, base.mask, base.next_tokens = [], None, None, []
            for adapter in base.adapters.values():
                adapter.in_use = 0
        for job in self._pending:
            self._send(job, error)
        self._pending.clear()

    def _send(self, job: _Job, item: GenerationChunk | BaseException) -> None:
        self._outbox.setdefault(job.loop, []).append((job, item))

    def _flush(self) -> None:
        """Hand this step's chunks to their event loops: one wake-up per loop, not per token."""
        outbox, self._outbox = self._outbox, {}
        for loop, items in outbox.items():
            try:
                loop.call_soon_threadsafe(_deliver, items)
            except RuntimeError:  # the caller's event loop is gone
                for job, _ in items:
                    job.cancelled.set()

    # --- admission: base models, adapters, prefill ---------------------------------------

    def _admit(self) -> None:
        waiting: list[_Job] = []
        admitted: dict[str, list[_Row]] = {}
        for job in self._pending:
            if job.cancelled.is_set():
                continue
            try:
                base = self._base(job.request)
                key = str(Path(job.request.base_model_dir).resolve())
                rows = admitted.setdefault(key, [])
                if len(base.rows) + len(rows) >= self.max_batch:
                    waiting.append(job)
                    continue
                adapter = self._adapter(base, job.request.adapter)
                if adapter is None:  # every cached adapter is busy: wait for one to free
                    waiting.append(job)
                    continue
                rows.append(self._row(base, job, adapter))
            except BackendError as error:
                self._send(job, error)
        self._pending = waiting
        for key, rows in admitted.items():
            if rows:
                self._prefill(self._bases[key], rows)

    def _base(self, request: GenerationRequest) -> _Base:
        key = str(Path(request.base_model_dir).resolve())
        base = self._bases.get(key)
        if base is not None:
            return base
        try:
            loaded = load_base_model(key, device=self.device, dtype=self.dtype)
        except (ManifestError, OSError, ValueError) as error:
            log.error("inference.base_model_unloadable", base_model=request.base_model)
            raise BackendError(
                code="base_model_unavailable",
                message=f"base model {request.base_model!r} cannot be loaded: {error}",
                status=503,
            ) from error
        eos = loaded.model.generation_config.eos_token_id
        eos_ids = {loaded.tokenizer.eos_token_id}
        eos_ids.update(eos if isinstance(eos, list) else [eos])
        base = _Base(
            loaded=loaded,
            device=self.device,
            eos_ids=frozenset(i for i in eos_ids if i is not None),
        )
        self._bases[key] = base
        return base

    def _adapter(self, base: _Base, ref: AdapterRef | None) -> str | None:
        """The peft name of `ref` on `base`, loaded (and hash-checked) if it is not cached;
        None when the cache is full of adapters that running requests use."""
        if ref is None:
            return BASE_ADAPTER
        started = time.perf_counter()
        key = (str(Path(ref.path).resolve()), ref.sha256)
        cached = base.adapters.get(key)
        if cached is not None:
            base.adapters.move_to_end(key)
            self.stats.adapter_hits += 1
            self.stats.swap_seconds_hit.append(time.perf_counter() - started)
            return cached.name
        config, state = self._read_adapter(ref)  # refused before anything is evicted
        signature = _signature(config)
        if len(base.adapters) >= self.adapter_cache:
            victim = next((k for k, a in base.adapters.items() if a.in_use == 0), None)
            if victim is None:
                return None
            slot = base.adapters[victim]
            if slot.signature == signature and _overwrite(slot.params, state):
                # Same shape of adapter: its weights are copied into the victim's tensors,
                # without peft's module surgery (most of what attaching costs).
                del base.adapters[victim]
                base.adapters[key] = _Adapter(
                    name=slot.name, sha256=ref.sha256, signature=signature, params=slot.params
                )
                self.stats.adapter_evictions += 1
                self.stats.adapter_slot_reuses += 1
                self.stats.adapter_misses += 1
                self.stats.swap_seconds_miss.append(time.perf_counter() - started)
                log.info("inference.adapter_loaded", model=ref.name, adapter=slot.name)
                return slot.name
            self._evict(base, victim)
        name, params = self._attach(base, ref, config, state)
        base.adapters[key] = _Adapter(
            name=name, sha256=ref.sha256, signature=signature, params=params
        )
        self.stats.adapter_misses += 1
        self.stats.swap_seconds_miss.append(time.perf_counter() - started)
        return name

    def _read_adapter(self, ref: AdapterRef) -> tuple[LoraConfig, dict[str, torch.Tensor]]:
        """The adapter's config and weights, from the very bytes whose sha256 was checked."""
        weights_path, config_path = adapter_files(ref.path)
        try:
            weights = weights_path.read_bytes()
            config_data = json.loads(config_path.read_text())
        except (OSError, ValueError) as error:
            log.error("inference.adapter_missing", model=ref.name)
            raise BackendError(
                code="adapter_missing",
                message=f"the adapter of {ref.name!r} cannot be read from the artifact store",
                status=410,
            ) from error
        if hashlib.sha256(weights).hexdigest() != ref.sha256:
            log.error("inference.adapter_hash_mismatch", model=ref.name)
            raise BackendError(
                code="adapter_hash_mismatch",
                message=f"the adapter of {ref.name!r} no longer matches its registered sha256",
                status=409,
            )
        config_data["inference_mode"] = True
        try:
            config = LoraConfig.from_peft_type(**config_data)
            state = {k: v.to(self.device) for k, v in load_safetensors(weights).items()}
        except (TypeError, ValueError) as error:
            raise BackendError(
                code="adapter_missing",
                message=f"the adapter of {ref.name!r} is not a LoRA adapter peft can read",
                status=410,
            ) from error
        return config, state

    def _attach(
        self, base: _Base, ref: AdapterRef, config: LoraConfig, state: dict[str, torch.Tensor]
    ) -> tuple[str, dict[str, torch.Tensor]]:
        base.serial += 1
        name = f"adapter{base.serial}"
        # low_cpu_mem_usage: the new LoRA weights start on the meta device, uninitialised,
        # and the state dict below assigns the real ones (no random init to throw away).
        if base.peft is None:
            base.peft = get_peft_model(
                base.loaded.model, config, adapter_name=name, low_cpu_mem_usage=True
            )
        else:
            base.peft.add_adapter(name, config, low_cpu_mem_usage=True)
        result = set_peft_model_state_dict(
            base.peft, state, adapter_name=name, low_cpu_mem_usage=True
        )
        unexpected = getattr(result, "unexpected_keys", [])
        if unexpected:
            base.peft.delete_adapter(name)
            raise BackendError(
                code="adapter_missing",
                message=f"the adapter of {ref.name!r} does not fit its base model",
                status=410,
            )
        base.peft.eval()
        base.active = None  # add_adapter may have changed which adapter is active
        base.tuner_layers = None
        marker = f".{name}"
        params: dict[str, torch.Tensor] = {
            n.replace(marker + ".", ".") if marker + "." in n else n.removesuffix(marker): p
            for n, p in base.peft.named_parameters()
            if marker + "." in n or n.endswith(marker)
        }
        log.info("inference.adapter_loaded", model=ref.name, adapter=name)
        return name, params

    def _evict(self, base: _Base, key: tuple[str, str]) -> None:
        adapter = base.adapters.pop(key)
        assert base.peft is not None
        if base.active == adapter.name:
            base.active = None
        with warnings.catch_warnings():  # "adapter X was active which is now deleted"
            warnings.simplefilter("ignore", UserWarning)
            base.peft.delete_adapter(adapter.name)
        base.tuner_layers = None
        self.stats.adapter_evictions += 1
        log.info("inference.adapter_evicted", adapter=adapter.name)

    def _row(self, base: _Base, job: _Job, adapter: str) -> _Row:
        request = job.request
        generator = None
        if request.temperature > 0:
            generator = torch.Generator(device=base.device)
            if request.seed is not None:
                generator.manual_seed(request.seed)
            else:
                generator.seed()
        if adapter != BASE_ADAPTER:
            for entry in base.adapters.values():
                if entry.name == adapter:
                    entry.in_use += 1
        return _Row(
            job=job,
            adapter=adapter,
            prompt_len=0,
            generator=generator,
            stops=tuple(s for s in request.stop if s),
        )

    def _forward(
        self,
        base: _Base,
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
        kwargs: dict[str, Any] = {}
        if base.peft is not None:
            uniform = all(a == adapters[0] for a in adapters)
            if uniform and adapters[0] != BASE_ADAPTER:
                if base.active != adapters[0]:
                    started = time.perf_counter()
                    _activate(base, adapters[0])
                    base.active = adapters[0]
                    self.stats.activate_seconds.append(time.perf_counter() - started)
            else:
                kwargs["adapter_names"] = list(adapters)
        out = base.model(
            input_ids=input_ids,
            attention_mask=mask,
            cache=cache,
            use_cache=True,
            logits_to_keep=1,
            **kwargs,
        )
        logits: torch.Tensor = out.logits[:, -1, :].float()
        return logits

    def _prefill(self, base: _Base, rows: list[_Row]) -> None:
        prompts: list[list[int]] = []
        for row in rows:
            ids = render_prompt(base.tokenizer, row.job.request)
            row.prompt_len = len(ids)
            prompts.append(ids)
        width = max(len(ids) for ids in prompts)
        pad = base.tokenizer.pad_token_id or 0
        input_ids = torch.tensor(
            [[pad] * (width - len(ids)) + ids for ids in prompts], device=base.device
        )
        mask = torch.tensor(
            [[0] * (width - len(ids)) + [1] * len(ids) for ids in prompts], device=base.device
        )
        cache = DynamicCache(config=base.loaded.model.config)
        padded = bool((mask == 0).any())
        logits = self._forward(
            base, [r.adapter for r in rows], input_ids, mask if padded else None, cache
        )
        self.stats.prefills += 1
        tokens = self._choose(logits, rows)
        for row, token in zip(rows, tokens, strict=True):
            if row.job.cancelled.is_set():
                row.finished = True
            else:
                self._advance(base, row, token)
        self._merge(base, rows, cache, mask, tokens)
        if any(row.finished for row in base.rows):
            self._drop_finished(base)

    def _merge(
        self,
        base: _Base,
        rows: list[_Row],
        cache: DynamicCache,
        mask: torch.Tensor,
        tokens: list[int],
    ) -> None:
        """Join newly prefilled rows to the running batch: both left-padded to one width."""
        if base.cache is None or base.mask is None or not base.rows:
            base.rows, base.cache, base.next_tokens = list(rows), cache, list(tokens)
            base.mask = F.pad(mask, (0, 1), value=1)
            base.padded = bool((mask == 0).any())
        else:
            old_mask = base.mask[:, :-1]  # the running rows' cached positions
            width = max(old_mask.shape[1], mask.shape[1])
            layers = []
            for (old_k, old_v), (new_k, new_v) in zip(_kv(base.cache), _kv(cache), strict=True):
                keys = torch.cat([_left_pad(old_k, width), _left_pad(new_k, width)])
                values = torch.cat([_left_pad(old_v, width), _left_pad(new_v, width)])
                layers.append((keys, values))
            base.cache = DynamicCache(ddp_cache_data=layers, config=base.loaded.model.config)
            joined = torch.cat([_left_pad(old_mask, width), _left_pad(mask, width)])
            base.mask = F.pad(joined, (0, 1), value=1)
            base.padded = bool((joined == 0).any())
            base.rows.extend(rows)
            base.next_tokens.extend(tokens)
        self.stats.max_rows = max(self.stats.max_rows, len(base.rows))

    # --- decoding -----------------------------------------------------------------------

    def _step(self, base: _Base) -> None:
        for row in base.rows:
            if row.job.cancelled.is_set():
                row.finished = True
        if any(row.finished for row in base.rows):
            self._drop_finished(base)
            if not base.rows:
                return
        assert base.cache is not None and base.mask is not None
        input_ids = torch.tensor(base.next_tokens, device=base.device).unsqueeze(-1)
        logits = self._forward(
            base,
            [r.adapter for r in base.rows],
            input_ids,
            base.mask if base.padded else None,
            base.cache,
        )
        self.stats.steps += 1
        base.next_tokens = self._choose(logits, base.rows)
        base.mask = F.pad(base.mask, (0, 1), value=1)
        self._after_tokens(base)

    @staticmethod
    def _choose(logits: torch.Tensor, rows: Sequence[_Row]) -> list[int]:
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

    def _after_tokens(self, base: _Base) -> None:
        """Stream each row's new token (the one in next_tokens), then drop finished rows."""
        for row, token in zip(base.rows, base.next_tokens, strict=True):
            if row.job.cancelled.is_set():
                row.finished = True
                continue
            self._advance(base, row, token)
        if any(row.finished for row in base.rows):
            self._drop_finished(base)

    def _advance(self, base: _Base, row: _Row, token: int) -> None:
        request = row.job.request
        reason: FinishReason | None = None
        row.ids.append(token)
        if token in base.eos_ids:
            reason = "stop"
            text = _decode_tail(base.decode, row, final=True)
            end = len(text)
        else:
            final = len(row.ids) >= request.max_tokens
            text = _decode_tail(base.decode, row, final=final)
            end = len(text)
            hit = _first_stop(text, row.stops, max(0, row.sent - _longest(row.stops)))
            if hit is not None:
                reason, end = "stop", hit
            elif len(row.ids) >= request.max_tokens:
                reason = "length"
            else:
                end = _safe_end(text, row.stops)
        piece = text[row.sent : end] if end > row.sent else ""
        row.sent = max(row.sent, end)
        if reason is not None:
            row.finished = True
            self._send(row.job, GenerationChunk(piece, len(row.ids), reason))
        elif piece:
            self._send(row.job, GenerationChunk(piece, len(row.ids)))

    def _drop_finished(self, base: _Base) -> None:
        keep = [i for i, row in enumerate(base.rows) if not row.finished]
        for row in base.rows:
            if row.finished and row.adapter != BASE_ADAPTER:
                for entry in base.adapters.values():
                    if entry.name == row.adapter:
                        entry.in_use -= 1
        if not keep:
            base.rows, base.cache, base.mask, base.next_tokens = [], None, None, []
            return
        assert base.cache is not None and base.mask is not None
        index = torch.tensor(keep, device=base.device)
        mask = base.mask.index_select(0, index)
        # Columns every remaining row pads are cut, so the cache never grows past the
        # longest live request.
        start = int((mask.sum(0) == 0).long().cumprod(0).sum().item())
        layers = [
            (
                keys.index_select(0, index)[:, :, start:],
                values.index_select(0, index)[:, :, start:],
            )
            for keys, values in _kv(base.cache)
        ]
        base.cache = DynamicCache(ddp_cache_data=layers, config=base.loaded.model.config)
        base.mask = mask[:, start:]
        base.padded = bool((base.mask == 0).any())
        base.rows = [base.rows[i] for i in keep]
        base.next_tokens = [base.next_tokens[i] for i in keep]


def _activate(base: _Base, name: str) -> None:
    """Make `name` the active adapter of every LoRA layer: what peft's set_adapter does for
    inference, without its pass over every module toggling requires_grad (tens of ms on a
    real model; here no gradient is ever taken)."""
    assert base.peft is not None
    if base.tuner_layers is None:
        base.tuner_layers = [m for m in base.peft.modules() if isinstance(m, BaseTunerLayer)]
    if not base.tuner_layers or not hasattr(base.tuner_layers[0], "_active_adapter"):
        base.peft.set_adapter(name)  # a peft whose layers keep it elsewhere
        return
    for layer in base.tuner_layers:
        layer._active_adapter = [name]
    tuner: Any = base.peft.base_model
    tuner.active_adapter = name


def _signature(config: LoraConfig) -> tuple[Any, ...]:
    """Two adapters with the same signature have the same tensors and the same scaling, so
    one can take over the other's slot by copying weights."""
    targets = config.target_modules
    return (
        config.r,
        config.lora_alpha,
        config.use_rslora,
        config.use_dora,
        tuple(sorted(targets)) if isinstance(targets, list | set | tuple) else targets,
        json.dumps(config.rank_pattern, sort_keys=True),
        json.dumps(config.alpha_pattern, sort_keys=True),
        config.modules_to_save and tuple(config.modules_to_save),
        config.bias,
        config.fan_in_fan_out,
    )


def _overwrite(params: dict[str, torch.Tensor], state: dict[str, torch.Tensor]) -> bool:
    """Copy `state` into `params` in place when they hold the same tensors; else False."""
    if params.keys() != state.keys() or any(params[k].shape != v.shape for k, v in state.items()):
        return False
    with torch.no_grad():
        for k, v in state.items():
            params[k].copy_(v)
    return True


def _deliver(items: list[tuple[_Job, Any]]) -> None:
    for job, item in items:
        job.inbox.put_nowait(item)


def _kv(cache: DynamicCache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Each layer's keys and values, [batch, heads, positions, head_dim] (full-attention
    DynamicLayers: Llama-family models; sliding-window caches are not batched this way)."""
    layers: list[Any] = list(cache.layers)
    return [(layer.keys, layer.values) for layer in layers]


def _decode_tail(decode: Callable[[list[int]], str], row: _Row, *, final: bool) -> str:
    """`row.text` brought up to date with its newest token, decoding a short window only:
    the ids since the last complete character (what a byte-level tokenizer needs to finish a
    multi-byte character) rather than the whole completion every step."""
    prefix = decode(row.ids[row.prefix_offset : row.read_offset])
    window = decode(row.ids[row.prefix_offset :])
    if len(window) > len(prefix) and (final or not window.endswith("\ufffd")):
        row.text += window[len(prefix) :]
        row.prefix_offset, row.read_offset = row.read_offset, len(row.ids)
    return row.text


def _decode(tokenizer: PreTrainedTokenizerBase, ids: list[int]) -> str:
    text = tokenizer.decode(ids, skip_special_tokens=True)
    return text if isinstance(text, str) else "".join(text)


def _left_pad(tensor: torch.Tensor, width: int) -> torch.Tensor:
    """Zeros on the left of the sequence dimension (dim 1 of a mask, dim 2 of keys/values)."""
    missing = width - tensor.shape[1 if tensor.dim() == 2 else 2]
    if missing <= 0:
        return tensor
    pad = (missing, 0) if tensor.dim() == 2 else (0, 0, missing, 0)
    return F.pad(tensor, pad)


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
