"""Tiny base models for tests, benchmarks and the quick demo.

`build_tiny_model` saves a random-initialised Llama and a locally trained byte-level BPE
tokenizer (ChatML template) as an ordinary base model directory with a manifest, so tests
load it through the very same path as SmolLM2. Nothing here is used by a real training run.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import structlog
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from trainer.base_models import Manifest, save_base_model
from trainer.demo_task import generate_examples
from trainer.evaluate import OOD_TEXT_PATH

log = structlog.get_logger(__name__)

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
END_OF_TEXT, TURN_START, TURN_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
TINY_SPECIAL_TOKENS = (END_OF_TEXT, TURN_START, TURN_END)


def default_tiny_corpus() -> list[str]:
    """Text the tiny tokenizer learns its merges from: general prose and the demo task."""
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
    manifest = save_base_model(
        model, tokenizer, target, source={"factory": "tiny_llama", "seed": seed}
    )
    log.info(
        "base_model.tiny_built",
        path=str(target),
        parameters=sum(p.numel() for p in model.parameters()),
        sha256=manifest.manifest_sha256,
    )
    return manifest
