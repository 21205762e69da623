"""Rotary embeddings at explicit per-token positions.

Packed micro-batches hold several documents per row, so positions restart or jump; Megatron's
GPTModel only computes RoPE for positions 0..s-1. Here the table is computed once for
max(position)+1 and gathered per token into [s, b, 1, d], which Megatron's unfused
apply_rotary_pos_emb broadcasts over heads. With compiled kernels, Megatron's unfused RoPE
application is replaced by the same formula compiled into one kernel (see kernels.py).
"""
from __future__ import annotations

import torch
from megatron.core.models.common.embeddings.rotary_pos_embedding import RotaryEmbedding

from acerag_megatron.models.arch import ModelArch
from acerag_megatron.models.kernels import compiled


def build_rotary(arch: ModelArch, config) -> RotaryEmbedding:
    """Megatron's RotaryEmbedding for `arch` (HF's rotate_half layout = non-interleaved)."""
    return RotaryEmbedding(kv_channels=arch.head_dim, rotary_percent=1.0, rotary_interleaved=False,
                           rotary_base=arch.rope_theta, use_cpu_initialization=config.use_cpu_initialization)


def rotary_for_positions(rotary: RotaryEmbedding, position_ids: torch.Tensor) -> torch.Tensor:
    """Angles for every token: position_ids [b, s] (long) -> freqs [s, b, 1, d] (float32)."""
    table_len = int(position_ids.max()) + 1
    table = rotary(table_len)  # [table_len, 1, 1, d]
    return table[:, 0, 0, :][position_ids.t()].unsqueeze(2)


def rope_bshd(t: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """Megatron's unfused non-interleaved RoPE over the full head dim: t [s, b, h, d], freqs [s, b, 1, d]."""
    cos, sin = torch.cos(freqs).to(t.dtype), torch.sin(freqs).to(t.dtype)
    x1, x2 = torch.chunk(t, 2, dim=-1)
    return t * cos + torch.cat((-x2, x1), dim=-1) * sin


def use_compiled_rope() -> None:
    """Route Megatron's unfused RoPE through the compiled rope_bshd (idempotent, per process).

    Only the case our models use (non-interleaved, rotary over the whole head, no mscale, no
    multi-latent attention) is rerouted; anything else keeps Megatron's function.
    """
    from megatron.core.models.common.embeddings import rope_utils

    original = rope_utils._apply_rotary_pos_emb_bshd
    if getattr(original, "compiled_route", False):
        return

    def apply(t, freqs, rotary_interleaved=False, multi_latent_attention=False, mscale=1.0):
        if rotary_interleaved or multi_latent_attention or mscale != 1.0 or freqs.shape[-1] != t.shape[-1]:
            return original(t, freqs, rotary_interleaved=rotary_interleaved,
                            multi_latent_attention=multi_latent_attention, mscale=mscale)
        return compiled(rope_bshd)(t, freqs)

    apply.compiled_route = True
    rope_utils._apply_rotary_pos_emb_bshd = apply
