"""The trainable compressive encoder: embedding + first N transformer layers + final RMSNorm.

It equals HF `LlamaModel`/`Qwen3Model` truncated to N layers (`last_hidden_state`). It lives
whole on the first pipeline stage. Shapes: B batch, S sequence, H hidden.
"""
from __future__ import annotations

import torch
from megatron.core import tensor_parallel
from megatron.core.models.common.embeddings.language_model_embedding import LanguageModelEmbedding
from megatron.core.transformer.module import MegatronModule
from megatron.core.transformer.transformer_block import TransformerBlock

from acerag_megatron.device import DeviceInfo
from acerag_megatron.models.arch import ModelArch
from acerag_megatron.models.layer_spec import block_spec
from acerag_megatron.models.packed_mask import dense_backend, for_backend
from acerag_megatron.models.rope import build_rotary, rotary_for_positions


def padded_vocab_size(vocab_size: int, tp: int) -> int:
    """Vocab size rounded up so every TP rank holds an equal slice."""
    return -(-vocab_size // tp) * tp


class CompressiveEncoder(MegatronModule):
    """Encoder of `config.num_layers` layers with its own (vocab-parallel) embedding table.

    Args:
        config: TransformerConfig with pipeline_model_parallel_size == 1.
        arch: architecture of the checkpoint the encoder comes from.
        device_info: resolved device (selects the layer spec).
        recompute_fc1: the MLPs recompute fc1 in the backward (layer_spec.layer_spec()).
    """

    def __init__(self, config, arch: ModelArch, device_info: DeviceInfo, recompute_fc1: bool = False):
        super().__init__(config=config)
        if config.pipeline_model_parallel_size != 1:
            raise ValueError("the encoder is not pipelined: build it with pipeline_model_parallel_size=1")
        self.arch = arch
        self.vocab_size = arch.vocab_size
        self.dense_masks = dense_backend(device_info)
        self.embedding = LanguageModelEmbedding(
            config=config, vocab_size=padded_vocab_size(arch.vocab_size, config.tensor_model_parallel_size),
            max_sequence_length=arch.max_position_embeddings, position_embedding_type="rope")
        self.rotary_pos_emb = build_rotary(arch, config)
        spec = block_spec(config, arch, device_info, pp_rank=0, recompute_fc1=recompute_fc1)
        self.decoder = TransformerBlock(config=config, spec=spec, pre_process=True, post_process=True,
                                        post_layer_norm=True)

    def set_input_tensor(self, input_tensor) -> None:
        """The encoder always starts from token ids; nothing arrives from a previous stage."""

    def forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor,
                attention_mask: torch.Tensor | None = None, gather_sequence: bool = True) -> torch.Tensor:
        """Encode token ids.

        Args:
            input_ids: [B, S] long.
            position_ids: [B, S] long, explicit RoPE positions.
            attention_mask: None (causal), bool broadcastable to [B, 1, S, S] (True = masked) or a
                packed-row spec [B, 2, S] (models/packed_mask.py).
            gather_sequence: under sequence parallelism, gather the full sequence (default);
                False keeps this rank's [S/tp, B, H] slice. The gather's backward sums the
                gradients of all TP ranks, so each rank must back-propagate only through the
                rows it owns (as CompressiveModel's splice does), not the same rows on every rank.

        Returns:
            Hidden states after the final norm, [S, B, H].
        """
        attention_mask = for_backend(attention_mask, self.dense_masks)
        hidden_SBH = self.embedding(input_ids=input_ids, position_ids=position_ids)
        rotary = rotary_for_positions(self.rotary_pos_emb, position_ids)
        hidden_SBH = self.decoder(hidden_states=hidden_SBH, attention_mask=attention_mask, rotary_pos_emb=rotary)
        if self.config.sequence_parallel and gather_sequence:
            # Each rank later consumes only the rows it splices (see CompressiveModel), so the
            # backward reduce-scatter sums disjoint contributions.
            hidden_SBH = tensor_parallel.gather_from_sequence_parallel_region(hidden_SBH)
        return hidden_SBH
