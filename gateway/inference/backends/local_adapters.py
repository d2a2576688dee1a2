"""The local backend's adapter cache: LoRA adapters attached to one base model.

Up to ``capacity`` adapters stay attached as named peft adapters, the least recently used
evicted first (never one a running request uses). Each adapter's weights are read once,
hashed as the registry hashes them (trainer.hashing.sha256_file of
``adapter_model.safetensors``) and loaded from the very bytes that were hashed, so what was
checked is what runs. A miss with the same shape of adapter as the one evicted copies its
weights into the evicted one's tensors, without peft's module surgery.

Used by the worker thread only."""

from __future__ import annotations

import hashlib
import json
import time
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
import torch
from peft import LoraConfig, PeftModel, get_peft_model, set_peft_model_state_dict
from peft.tuners.tuners_utils import BaseTunerLayer
from safetensors.torch import load as load_safetensors

from gateway.inference.backends.base import AdapterRef, BackendError
from gateway.inference.backends.local_stats import BackendStats
from trainer.checkpoints import ADAPTER_CONFIG, ADAPTER_WEIGHTS
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


@dataclass
class _Adapter:
    name: str  # the peft adapter (slot) holding it
    sha256: str
    signature: tuple[Any, ...]  # what must match for another adapter to reuse the slot
    params: dict[str, torch.Tensor]  # the slot's tensors by their name in the weights file
    in_use: int = 0


class AdapterCache:
    """The adapters attached to one base model, and which one peft has active."""

    def __init__(
        self, model: Any, *, capacity: int, device: torch.device, stats: BackendStats
    ) -> None:
        self.base_model = model
        self.capacity = capacity
        self.device = device
        self.stats = stats
        self.peft: PeftModel | None = None  # the base model wrapped, once an adapter came
        self.entries: OrderedDict[tuple[str, str], _Adapter] = OrderedDict()
        self.active: str | None = None  # the adapter peft has active (uniform batches)
        self._tuner_layers: list[Any] | None = None  # peft's LoRA layers, found after a change
        self._serial = 0

    @property
    def model(self) -> Any:
        return self.peft if self.peft is not None else self.base_model

    def lookup(self, ref: AdapterRef | None) -> str | None:
        """The peft name of `ref`, loaded (and hash-checked) if it is not cached; None when
        the cache is full of adapters that running requests use (the caller waits)."""
        if ref is None:
            return BASE_ADAPTER
        started = time.perf_counter()
        key = (str(Path(ref.path).resolve()), ref.sha256)
        cached = self.entries.get(key)
        if cached is not None:
            self.entries.move_to_end(key)
            self.stats.adapter_hits += 1
            self.stats.swap_seconds_hit.append(time.perf_counter() - started)
            return cached.name
        full = len(self.entries) >= self.capacity
        victim = next((k for k, a in self.entries.items() if a.in_use == 0), None)
        if full and victim is None:
            return None  # checked before reading: a waiting request does not re-read
        config, state = self._read(ref)  # refused before anything is evicted
        signature = _signature(config)
        if full and victim is not None:
            slot = self.entries[victim]
            if slot.signature == signature and _overwrite(slot.params, state):
                del self.entries[victim]
                self.entries[key] = _Adapter(
                    name=slot.name, sha256=ref.sha256, signature=signature, params=slot.params
                )
                self.stats.adapter_evictions += 1
                self.stats.adapter_slot_reuses += 1
                self._missed(started)
                log.info("inference.adapter_loaded", model=ref.name, adapter=slot.name)
                return slot.name
            self._evict(victim)
        name, params = self._attach(ref, config, state)
        self.entries[key] = _Adapter(
            name=name, sha256=ref.sha256, signature=signature, params=params
        )
        self._missed(started)
        return name

    def acquire(self, name: str) -> None:
        """A request runs on `name`: it is not evicted until released."""
        self._count(name, 1)

    def release(self, name: str) -> None:
        self._count(name, -1)

    def release_all(self) -> None:
        for adapter in self.entries.values():
            adapter.in_use = 0

    def forward_kwargs(self, adapters: Sequence[str]) -> dict[str, Any]:
        """What the model call needs for rows on `adapters`: nothing when they share one (it
        is made the active adapter, peft's plain path), else peft's mixed-adapter batch."""
        if self.peft is None:
            return {}
        first = adapters[0]
        if first != BASE_ADAPTER and all(a == first for a in adapters):
            if self.active != first:
                started = time.perf_counter()
                self._activate(first)
                self.active = first
                self.stats.activate_seconds.append(time.perf_counter() - started)
            return {}
        return {"adapter_names": list(adapters)}

    def _count(self, name: str, change: int) -> None:
        if name == BASE_ADAPTER:
            return
        for entry in self.entries.values():
            if entry.name == name:
                entry.in_use += change

    def _missed(self, started: float) -> None:
        self.stats.adapter_misses += 1
        self.stats.swap_seconds_miss.append(time.perf_counter() - started)

    def _read(self, ref: AdapterRef) -> tuple[LoraConfig, dict[str, torch.Tensor]]:
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
        self, ref: AdapterRef, config: LoraConfig, state: dict[str, torch.Tensor]
    ) -> tuple[str, dict[str, torch.Tensor]]:
        self._serial += 1
        name = f"adapter{self._serial}"
        # low_cpu_mem_usage: the new LoRA weights start on the meta device, uninitialised,
        # and the state dict below assigns the real ones (no random init to throw away).
        if self.peft is None:
            self.peft = get_peft_model(
                self.base_model, config, adapter_name=name, low_cpu_mem_usage=True
            )
        else:
            self.peft.add_adapter(name, config, low_cpu_mem_usage=True)
        result = set_peft_model_state_dict(
            self.peft, state, adapter_name=name, low_cpu_mem_usage=True
        )
        if getattr(result, "unexpected_keys", []):
            self.peft.delete_adapter(name)
            raise BackendError(
                code="adapter_missing",
                message=f"the adapter of {ref.name!r} does not fit its base model",
                status=410,
            )
        self.peft.eval()
        self.active = None  # add_adapter may have changed which adapter is active
        self._tuner_layers = None
        marker = f".{name}"
        params: dict[str, torch.Tensor] = {
            n.replace(marker + ".", ".") if marker + "." in n else n.removesuffix(marker): p
            for n, p in self.peft.named_parameters()
            if marker + "." in n or n.endswith(marker)
        }
        log.info("inference.adapter_loaded", model=ref.name, adapter=name)
        return name, params

    def _evict(self, key: tuple[str, str]) -> None:
        adapter = self.entries.pop(key)
        assert self.peft is not None
        if self.active == adapter.name:
            self.active = None
        with warnings.catch_warnings():  # "adapter X was active which is now deleted"
            warnings.simplefilter("ignore", UserWarning)
            self.peft.delete_adapter(adapter.name)
        self._tuner_layers = None
        self.stats.adapter_evictions += 1
        log.info("inference.adapter_evicted", adapter=adapter.name)

    def _activate(self, name: str) -> None:
        """Make `name` the active adapter of every LoRA layer: what peft's set_adapter does
        for inference, without its pass over every module toggling requires_grad (tens of
        ms on a real model; here no gradient is ever taken)."""
        assert self.peft is not None
        if self._tuner_layers is None:
            self._tuner_layers = [m for m in self.peft.modules() if isinstance(m, BaseTunerLayer)]
        if not self._tuner_layers or not hasattr(self._tuner_layers[0], "_active_adapter"):
            self.peft.set_adapter(name)  # a peft whose layers keep it elsewhere
            return
        for layer in self._tuner_layers:
            layer._active_adapter = [name]
        tuner: Any = self.peft.base_model
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
