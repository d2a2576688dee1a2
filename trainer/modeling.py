"""The forward pass used for training and scoring: packed attention and target-only logits.

Packed rows hold several examples back to back. Transformers already keeps them apart when it
sees position ids restart (it builds a block-diagonal causal mask), but a dense mask makes SDPA
compute every masked score: on the CPU that is ~10x the attention work of the real examples.
`segmented_sdpa_attention` instead attends within each example only, using the boundaries
(`cu_seq_lens_q`, the flash-attention varlen convention) that `summed_target_loss` passes
down: on CUDA in half precision through torch's varlen flash attention in one call, elsewhere
with one causal SDPA call per example. Without boundaries (generation, padded batches) it is
plain SDPA.

Logits are computed only where a target exists (assistant tokens): the output projection over
the whole vocabulary is a large share of a small model's compute, and prompts need none of it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import AttentionInterface, PreTrainedModel
from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from trainer.data import IGNORE_INDEX, Batch

SEGMENTED_ATTENTION = "tunegate_segmented_sdpa"


def segmented_sdpa_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    boundaries = kwargs.get("cu_seq_lens_q")
    if boundaries is None:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    if query.shape[0] != 1:
        raise ValueError("packed attention expects all examples concatenated in one row")
    groups = getattr(module, "num_key_value_groups", 1)
    key, value = repeat_kv(key, groups), repeat_kv(value, groups)
    if query.is_cuda and query.dtype in (torch.float16, torch.bfloat16) and dropout == 0.0:
        return _varlen_flash_attention(
            query, key, value, boundaries, kwargs["max_length_q"], scaling
        ), None
    bounds = boundaries.tolist()
    pieces = [
        F.scaled_dot_product_attention(
            query[:, :, start:end],
            key[:, :, start:end],
            value[:, :, start:end],
            dropout_p=dropout,
            scale=scaling,
            is_causal=True,
        )
        for start, end in zip(bounds[:-1], bounds[1:], strict=True)
    ]
    return torch.cat(pieces, dim=2).transpose(1, 2).contiguous(), None


def _varlen_flash_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    boundaries: torch.Tensor,
    max_length: int,
    scaling: float | None,
) -> torch.Tensor:
    # Here, not at the top: only the CUDA path needs it, and not every torch the project
    # admits (>=2.4) has torch.nn.attention.varlen.
    from torch.nn.attention.varlen import varlen_attn

    def tokens_first(states: torch.Tensor) -> torch.Tensor:
        return states[0].transpose(0, 1).contiguous()

    output = varlen_attn(
        tokens_first(query),
        tokens_first(key),
        tokens_first(value),
        boundaries,
        boundaries,
        max_length,
        max_length,
        scale=scaling,
        window_size=(-1, 0),
    )
    return output.unsqueeze(0)


def register_segmented_attention() -> None:
    AttentionInterface.register(SEGMENTED_ATTENTION, segmented_sdpa_attention)
    # Generation and padded batches fall through to SDPA, so they need SDPA's masks.
    AttentionMaskInterface.register(SEGMENTED_ATTENTION, sdpa_mask)


def use_segmented_attention(model: PreTrainedModel) -> None:
    register_segmented_attention()
    model.set_attn_implementation(SEGMENTED_ATTENTION)


def causal_lm_of(model: torch.nn.Module) -> PreTrainedModel:
    """The transformers causal LM inside a peft wrapper (its layers carry the adapters)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def summed_target_loss(model: torch.nn.Module, batch: Batch) -> torch.Tensor:
    """Sum of cross-entropy over the batch's target tokens (divide by n_target_tokens)."""
    logits, targets = target_logits(model, batch)
    return F.cross_entropy(logits, targets, reduction="sum")


def summed_target_loss_and_hits(model: torch.nn.Module, batch: Batch) -> tuple[float, int]:
    """For scoring, never for training: the summed cross-entropy over the batch's target
    tokens, and how many of them are the model's most likely next token."""
    logits, targets = target_logits(model, batch)
    loss = F.cross_entropy(logits, targets, reduction="sum")
    hits = (logits.argmax(dim=-1) == targets).sum()
    return loss.item(), int(hits.item())


def target_logits(model: torch.nn.Module, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """fp32 logits at the batch's target positions only, and the targets there."""
    causal_lm = causal_lm_of(model)
    attention_mask, boundaries = batch.attention_mask, {}
    if batch.cu_seq_lens is not None:
        lengths = batch.cu_seq_lens[1:] - batch.cu_seq_lens[:-1]
        boundaries = {
            "cu_seq_lens_q": batch.cu_seq_lens,
            "cu_seq_lens_k": batch.cu_seq_lens,
            "max_length_q": int(lengths.max()),
            "max_length_k": int(lengths.max()),
        }
        if causal_lm.config._attn_implementation == SEGMENTED_ATTENTION:
            # An all-ones mask tells transformers "plain causal", so it skips building the
            # tokens x tokens block mask it would otherwise derive from the restarting positions;
            # the boundaries above keep examples apart instead.
            attention_mask = torch.ones_like(batch.input_ids)
    hidden = causal_lm.get_decoder()(
        input_ids=batch.input_ids,
        attention_mask=attention_mask,
        position_ids=batch.position_ids,
        use_cache=False,
        **boundaries,
    ).last_hidden_state
    selected = batch.targets != IGNORE_INDEX
    logits = causal_lm.get_output_embeddings()(hidden[selected]).float()
    softcap = getattr(causal_lm.config, "final_logit_softcapping", None)
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    return logits, batch.targets[selected]
