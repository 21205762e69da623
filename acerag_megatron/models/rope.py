"""Rotary embeddings at explicit per-token positions.

Packed micro-batches hold several documents per row, so positions restart or jump; Megatron's
GPTModel only computes RoPE for positions 0..s-1. Here the table is computed once for
max(position)+1 and gathered per token into [s, b, 1, d], which Megatron's unfused
apply_rotary_pos_emb broadcasts over heads.
"""
from __future__ import annotations

import torch
from megatron.core.models.common.embeddings.rotary_pos_embedding import RotaryEmbedding

from acerag_megatron.models.arch import ModelArch


def build_rotary(arch: ModelArch, config) -> RotaryEmbedding:
    """Megatron's RotaryEmbedding for `arch` (HF's rotate_half layout = non-interleaved)."""
    return RotaryEmbedding(kv_channels=arch.head_dim, rotary_percent=1.0, rotary_interleaved=False,
                           rotary_base=arch.rope_theta, use_cpu_initialization=config.use_cpu_initialization)


def rotary_for_positions(rotary: RotaryEmbedding, position_ids: torch.Tensor) -> torch.Tensor:
    """Angles for every token: position_ids [b, s] (long) -> freqs [s, b, 1, d] (float32)."""
    table_len = int(position_ids.max()) + 1
    table = rotary(table_len)  # [table_len, 1, 1, d]
    return table[:, 0, 0, :][position_ids.t()].unsqueeze(2)
