"""Adapter weights on disk, resumable checkpoints, and a parent run's adapter to continue from.

A checkpoint holds the adapter only (never the base weights) plus what an exact resume needs:
optimizer and schedule state, the random generators, the step and the best-so-far tracking.
Data order is a pure function of (seed, epoch), so the step number locates the data. Each
checkpoint is written into a staging directory and renamed into place, so a crash never
leaves a half-written one that a resume could pick up.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
import torch
from peft import PeftModel, get_peft_model_state_dict, set_peft_model_state_dict
from safetensors.torch import load_file, save_file

from trainer.hashing import sha256_file

log = structlog.get_logger(__name__)

ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
BEST_ADAPTER_WEIGHTS = "best_adapter_model.safetensors"
TRAINING_STATE = "training_state.pt"


def adapter_state(model: PeftModel) -> dict[str, torch.Tensor]:
    """A detached CPU copy of the trainable adapter weights."""
    return {
        name: tensor.detach().to("cpu", copy=True).contiguous()
        for name, tensor in get_peft_model_state_dict(model).items()
    }


def load_adapter_state(model: PeftModel, state: dict[str, torch.Tensor]) -> None:
    result = set_peft_model_state_dict(model, state)
    unexpected = getattr(result, "unexpected_keys", [])
    if unexpected:
        raise ValueError(f"adapter state has unknown tensors: {unexpected[:5]}")


def write_adapter(
    model: PeftModel, directory: Path, state: dict[str, torch.Tensor] | None = None
) -> str:
    """adapter_model.safetensors + adapter_config.json (what PeftModel.from_pretrained reads).

    Returns the sha256 of the weights file, the adapter's identity.
    """
    directory.mkdir(parents=True, exist_ok=True)
    weights = directory / ADAPTER_WEIGHTS
    save_file(
        state if state is not None else adapter_state(model), weights, metadata={"format": "pt"}
    )
    model.peft_config["default"].save_pretrained(directory)
    return sha256_file(weights)


def _rng_state() -> dict[str, Any]:
    return {
        "python": random.getstate(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def _restore_rng(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@dataclass
class ResumeState:
    step: int
    fingerprint: str
    progress: dict[str, Any]
    best_adapter: dict[str, torch.Tensor] | None


def write_checkpoint(
    directory: Path,
    *,
    model: PeftModel,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    step: int,
    fingerprint: str,
    progress: dict[str, Any],
    best_adapter: dict[str, torch.Tensor] | None,
) -> str:
    """Write one checkpoint atomically; returns the adapter's sha256."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = directory.parent / f".{directory.name}.partial-{uuid.uuid4().hex[:8]}"
    try:
        adapter_sha256 = write_adapter(model, staging)
        if best_adapter is not None:
            save_file(best_adapter, staging / BEST_ADAPTER_WEIGHTS, metadata={"format": "pt"})
        torch.save(
            {
                "step": step,
                "fingerprint": fingerprint,
                "progress": progress,
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "rng": _rng_state(),
            },
            staging / TRAINING_STATE,
        )
        if directory.exists():
            shutil.rmtree(directory)
        os.replace(staging, directory)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return adapter_sha256


def read_checkpoint(
    directory: Path,
    *,
    model: PeftModel,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    fingerprint: str,
) -> ResumeState:
    """Load a checkpoint into model, optimizer, schedule and random generators."""
    state = torch.load(directory / TRAINING_STATE, map_location="cpu", weights_only=True)
    if state["fingerprint"] != fingerprint:
        raise ValueError(
            f"{directory} belongs to a different run (spec, base model or data differ); "
            "a checkpoint resumes only the run that wrote it"
        )
    load_adapter_state(model, load_file(directory / ADAPTER_WEIGHTS))
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    _restore_rng(state["rng"])
    best_path = directory / BEST_ADAPTER_WEIGHTS
    return ResumeState(
        step=state["step"],
        fingerprint=state["fingerprint"],
        progress=state["progress"],
        best_adapter=load_file(best_path) if best_path.exists() else None,
    )


# What must agree between a parent adapter and the new run for its weights to mean the same.
_ADAPTER_CONFIG_FIELDS = ("r", "lora_alpha", "target_modules", "use_rslora", "use_dora")


class AdapterMismatchError(ValueError):
    """init_adapter_dir holds an adapter whose LoRA configuration differs from the spec's."""


def load_initial_adapter(model: PeftModel, directory: Path) -> None:
    """Continue from a parent run: its adapter weights replace the fresh initialisation."""
    nested = directory / "adapter"
    if not (directory / ADAPTER_CONFIG).exists() and (nested / ADAPTER_CONFIG).exists():
        directory = nested
    config_path, weights_path = directory / ADAPTER_CONFIG, directory / ADAPTER_WEIGHTS
    if not config_path.is_file() or not weights_path.is_file():
        raise FileNotFoundError(
            f"init_adapter_dir {directory} has no {ADAPTER_CONFIG} and {ADAPTER_WEIGHTS}"
        )
    parent = json.loads(config_path.read_text())
    # The configuration peft applied (and saves): "all-linear" already resolved.
    lora_config = model.peft_config["default"]
    mine = {
        "r": lora_config.r,
        "lora_alpha": lora_config.lora_alpha,
        "target_modules": sorted(lora_config.target_modules),
        "use_rslora": lora_config.use_rslora,
        "use_dora": lora_config.use_dora,
    }
    theirs = {name: parent.get(name) for name in _ADAPTER_CONFIG_FIELDS}
    theirs["target_modules"] = sorted(theirs["target_modules"] or [])
    differ = {
        name: {"parent": theirs[name], "spec": mine[name]}
        for name in _ADAPTER_CONFIG_FIELDS
        if theirs[name] != mine[name]
    }
    if differ:
        raise AdapterMismatchError(
            f"the adapter in {directory} was trained with a different LoRA configuration; "
            f"continuing from it needs the same values: {differ}"
        )
    load_adapter_state(model, load_file(weights_path))
    log.info("run.adapter_initialised", init_adapter_dir=str(directory))
