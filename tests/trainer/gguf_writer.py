"""Write a Hugging Face Llama directory as a float32 GGUF file, the way llama.cpp's converter
lays it out (q/k rows permuted for its RoPE, a 'gpt2' byte-level vocabulary), so the import
path can be tested on a tiny model instead of a downloaded one."""

from __future__ import annotations

import json
from pathlib import Path

import gguf
import numpy as np
import torch
from safetensors.torch import load_file

TOKEN_TYPE_NORMAL, TOKEN_TYPE_CONTROL = 1, 3


def _llama_cpp_permute(weights: np.ndarray, n_head: int) -> np.ndarray:
    return (
        weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def write_llama_gguf(model_dir: Path, gguf_path: Path) -> None:
    config = json.loads((model_dir / "config.json").read_text())
    tokenizer = json.loads((model_dir / "tokenizer.json").read_text())
    tokenizer_config = json.loads((model_dir / "tokenizer_config.json").read_text())
    weights = load_file(model_dir / "model.safetensors")

    writer = gguf.GGUFWriter(gguf_path, arch="llama")
    writer.add_name("tiny-llama")
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(config["num_attention_heads"])
    writer.add_head_count_kv(config["num_key_value_heads"])
    writer.add_rope_freq_base(config["rope_parameters"]["rope_theta"])
    writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
    writer.add_rope_dimension_count(config["hidden_size"] // config["num_attention_heads"])
    writer.add_vocab_size(config["vocab_size"])

    vocab = tokenizer["model"]["vocab"]
    tokens = [token for token, _ in sorted(vocab.items(), key=lambda item: item[1])]
    special = {added["content"] for added in tokenizer["added_tokens"] if added["special"]}
    merges = [m if isinstance(m, str) else " ".join(m) for m in tokenizer["model"]["merges"]]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types(
        [TOKEN_TYPE_CONTROL if t in special else TOKEN_TYPE_NORMAL for t in tokens]
    )
    writer.add_token_merges(merges)
    writer.add_bos_token_id(config["bos_token_id"])
    writer.add_eos_token_id(config["eos_token_id"])
    writer.add_pad_token_id(config["pad_token_id"])
    writer.add_add_bos_token(False)
    chat_template = (
        tokenizer_config.get("chat_template") or (model_dir / "chat_template.jinja").read_text()
    )
    writer.add_chat_template(chat_template)

    def add(name: str, tensor: torch.Tensor) -> None:
        writer.add_tensor(name, tensor.to(torch.float32).numpy())

    heads, kv_heads = config["num_attention_heads"], config["num_key_value_heads"]
    add("token_embd.weight", weights["model.embed_tokens.weight"])
    for layer in range(config["num_hidden_layers"]):
        prefix = f"model.layers.{layer}."
        block = f"blk.{layer}."
        q = weights[prefix + "self_attn.q_proj.weight"].numpy()
        k = weights[prefix + "self_attn.k_proj.weight"].numpy()
        writer.add_tensor(block + "attn_q.weight", _llama_cpp_permute(q, heads))
        writer.add_tensor(block + "attn_k.weight", _llama_cpp_permute(k, kv_heads))
        add(block + "attn_v.weight", weights[prefix + "self_attn.v_proj.weight"])
        add(block + "attn_output.weight", weights[prefix + "self_attn.o_proj.weight"])
        add(block + "ffn_gate.weight", weights[prefix + "mlp.gate_proj.weight"])
        add(block + "ffn_up.weight", weights[prefix + "mlp.up_proj.weight"])
        add(block + "ffn_down.weight", weights[prefix + "mlp.down_proj.weight"])
        add(block + "attn_norm.weight", weights[prefix + "input_layernorm.weight"])
        add(block + "ffn_norm.weight", weights[prefix + "post_attention_layernorm.weight"])
    add("output_norm.weight", weights["model.norm.weight"])

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
