"""The same models through vLLM's multi-LoRA serving (GPU; the optional ``vllm`` extra).

One ``AsyncLLM`` engine per base model, started with ``enable_lora=True`` on first use;
adapters are handed to it per request as ``LoRARequest(name, int_id, path)`` and vLLM loads
them at run time (``max_loras`` of them share a batch, ``max_cpu_loras`` stay cached). Before
an adapter's first use here its weights are hashed as the registry hashes them and compared
with ``AdapterRef.sha256``; a mismatch is refused like the local backend refuses it.

The prompt is rendered with the base model's own tokenizer and chat template, as training and
the local backend render it (trainer.data.render_chat), and handed over as token ids, so
vLLM adds nothing. Stop strings, seed, temperature (0: greedy), top_p and max_tokens map onto
``SamplingParams``; closing the async iterator closes vLLM's generator, which aborts the
request in the engine.

vLLM is imported inside this class only: a gateway without the extra imports this module
fine and gets ``backend_unavailable`` when it is selected. Its install would replace the CPU
torch pin, so it lives in its own environment (see bench/gpu_check.sh).
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import structlog

from gateway.inference.backends.base import (
    BackendError,
    FinishReason,
    GenerationChunk,
    GenerationRequest,
)

log = structlog.get_logger(__name__)


def _import_vllm() -> Any:
    try:
        import vllm
    except ImportError as error:
        raise BackendError(
            code="backend_unavailable",
            message="inference_backend=vllm needs the optional extra: pip install "
            "'tunegate[vllm]' (GPU only; in an environment of its own, it replaces the CPU "
            "torch build)",
            status=503,
        ) from error
    return vllm


def make_backend(settings: Any) -> VllmBackend:
    """The factory gateway.inference.backends.make_backend calls for ``inference_backend=vllm``."""
    return VllmBackend(
        max_loras=settings.vllm_max_loras,
        max_lora_rank=settings.vllm_max_lora_rank,
        max_cpu_loras=settings.inference_adapter_cache,
        gpu_memory_utilization=settings.vllm_gpu_memory_utilization,
        max_model_len=settings.vllm_max_model_len,
    )


class VllmBackend:
    name = "vllm"

    def __init__(
        self,
        *,
        max_loras: int = 8,
        max_lora_rank: int = 64,
        max_cpu_loras: int = 8,
        gpu_memory_utilization: float = 0.85,
        max_model_len: int | None = None,
        engine_kwargs: dict[str, Any] | None = None,
    ) -> None:
        self._vllm = _import_vllm()  # refuses at once, before any request, without the extra
        self.max_loras = max_loras
        self.max_lora_rank = max_lora_rank
        self.max_cpu_loras = max(max_cpu_loras, max_loras)
        self.gpu_memory_utilization = gpu_memory_utilization
        self.max_model_len = max_model_len
        self.engine_kwargs = dict(engine_kwargs or {})
        self._engines: dict[str, Any] = {}
        self._tokenizers: dict[str, Any] = {}
        self._loras: dict[tuple[str, str], Any] = {}  # (path, sha256) -> LoRARequest
        self._lora_ids = itertools.count(1)
        self._lock = threading.Lock()
        self._engine_lock = asyncio.Lock()

    # --- helpers ------------------------------------------------------------------------

    def _tokenizer(self, base_dir: str) -> Any:
        from transformers import AutoTokenizer

        with self._lock:
            tokenizer = self._tokenizers.get(base_dir)
            if tokenizer is None:
                tokenizer = AutoTokenizer.from_pretrained(base_dir, local_files_only=True)
                self._tokenizers[base_dir] = tokenizer
            return tokenizer

    def _prompt_ids(self, request: GenerationRequest) -> list[int]:
        from gateway.inference.backends.local import render_prompt

        base_dir = str(Path(request.base_model_dir).resolve())
        return render_prompt(self._tokenizer(base_dir), request)

    async def _engine(self, request: GenerationRequest) -> Any:
        base_dir = str(Path(request.base_model_dir).resolve())
        async with self._engine_lock:
            engine = self._engines.get(base_dir)
            if engine is not None:
                return engine
            from trainer.base_models import ManifestError, verify_manifest

            try:
                await asyncio.to_thread(verify_manifest, base_dir)
            except (ManifestError, OSError) as error:
                raise BackendError(
                    code="base_model_unavailable",
                    message=f"base model {request.base_model!r} cannot be loaded: {error}",
                    status=503,
                ) from error
            args = self._vllm.AsyncEngineArgs(
                model=base_dir,
                enable_lora=True,
                max_loras=self.max_loras,
                max_lora_rank=self.max_lora_rank,
                max_cpu_loras=self.max_cpu_loras,
                gpu_memory_utilization=self.gpu_memory_utilization,
                max_model_len=self.max_model_len,
                **self.engine_kwargs,
            )
            engine = self._vllm.AsyncLLMEngine.from_engine_args(args)
            self._engines[base_dir] = engine
            log.info("inference.vllm.engine_started", base_model=request.base_model)
            return engine

    async def _lora(self, request: GenerationRequest) -> Any:
        ref = request.adapter
        if ref is None:
            return None
        from gateway.inference.backends.local import adapter_files, adapter_sha256

        weights, _ = adapter_files(ref.path)
        key = (str(weights.parent.resolve()), ref.sha256)
        lora = self._loras.get(key)
        if lora is not None:
            return lora
        try:
            actual = await asyncio.to_thread(adapter_sha256, ref.path)
        except OSError as error:
            raise BackendError(
                code="adapter_missing",
                message=f"the adapter of {ref.name!r} cannot be read from the artifact store",
                status=410,
            ) from error
        if actual != ref.sha256:
            log.error("inference.adapter_hash_mismatch", model=ref.name)
            raise BackendError(
                code="adapter_hash_mismatch",
                message=f"the adapter of {ref.name!r} no longer matches its registered sha256",
                status=409,
            )
        from vllm.lora.request import LoRARequest

        lora = LoRARequest(ref.name, next(self._lora_ids), key[0])
        self._loras[key] = lora
        return lora

    def _sampling(self, request: GenerationRequest) -> Any:
        return self._vllm.SamplingParams(
            n=1,
            max_tokens=request.max_tokens,
            temperature=max(request.temperature, 0.0),
            top_p=request.top_p,
            seed=request.seed,
            stop=list(request.stop) or None,
            include_stop_str_in_output=False,
        )

    # --- the interface ------------------------------------------------------------------

    def prompt_tokens(self, request: GenerationRequest) -> int:
        return len(self._prompt_ids(request))

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        engine = await self._engine(request)
        lora = await self._lora(request)
        prompt = {"prompt_token_ids": await asyncio.to_thread(self._prompt_ids, request)}
        stream = engine.generate(
            prompt, self._sampling(request), f"tg-{uuid.uuid4().hex}", lora_request=lora
        )
        sent = ""
        try:
            async for output in stream:
                completion = output.outputs[0]
                text = completion.text
                piece = text[len(sent) :] if text.startswith(sent) else ""
                sent = text
                tokens = len(completion.token_ids)
                if output.finished:
                    reason: FinishReason = (
                        "length" if completion.finish_reason == "length" else "stop"
                    )
                    yield GenerationChunk(piece, tokens, reason)
                    return
                if piece:
                    yield GenerationChunk(piece, tokens)
        finally:
            await stream.aclose()  # vLLM aborts the request when its generator is closed

    async def close(self) -> None:
        for engine in self._engines.values():
            shutdown = getattr(engine, "shutdown", None)
            if shutdown is not None:
                shutdown()
        self._engines.clear()
