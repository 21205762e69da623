"""Rotary embeddings at explicit per-token positions.

Packed micro-batches hold several documents per row, so positions restart or jump; Megatron's
GPTModel only computes RoPE for positions 0..s-1. Here the table is computed once for
max(position)+1 and gathered per token into [s, b, 1, d], which Megatron's unfused
apply_rotary_pos_emb broadcasts over heads. With compiled kernels, Megatron's unfused RoPE
application is replaced by the same formula compiled into one kernel (see kernels.py), fed
with cos and sin computed once per forward pass: every layer applies RoPE to q and k with the
same angles, and a fused kernel that took them from the angles would evaluate sin and cos once
per head and element, in the forward and again in the backward.
"""
from __future__ import annotations

import weakref

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
    return rope_cos_sin(t, *cos_sin(freqs, t.dtype))


def cos_sin(freqs: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of the angles in float32, then cast, as Megatron's unfused RoPE rounds them."""
    return torch.cos(freqs).to(dtype), torch.sin(freqs).to(dtype)


def rope_cos_sin(t: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    x1, x2 = torch.chunk(t, 2, dim=-1)
    return t * cos + torch.cat((-x2, x1), dim=-1) * sin


class _CosSinCache:
    """cos/sin of the last angles tensor seen, per dtype. Megatron passes the same freqs object to
    every layer of a forward pass; a weak reference ties the entry to that object's lifetime, and
    its version counter to its contents."""

    def __init__(self):
        self.ref, self.version, self.values = None, None, {}

    def get(self, freqs: torch.Tensor, dtype: torch.dtype):
        if self.ref is None or self.ref() is not freqs or self.version != freqs._version:
            self.ref, self.version, self.values = weakref.ref(freqs), freqs._version, {}
        if dtype not in self.values:
            self.values[dtype] = cos_sin(freqs.detach(), dtype)
        return self.values[dtype]


def use_compiled_rope() -> None:
    """Route Megatron's unfused RoPE through the compiled rope_cos_sin (idempotent, per process).

    Only the case our models use (non-interleaved, rotary over the whole head, no mscale, no
    multi-latent attention) is rerouted; anything else keeps Megatron's function.
    """
    from megatron.core.models.common.embeddings import rope_utils

    original = rope_utils._apply_rotary_pos_emb_bshd
    if getattr(original, "compiled_route", False):
        return
    cache = _CosSinCache()

    def apply(t, freqs, rotary_interleaved=False, multi_latent_attention=False, mscale=1.0):
        if rotary_interleaved or multi_latent_attention or mscale != 1.0 or freqs.shape[-1] != t.shape[-1]:
            return original(t, freqs, rotary_interleaved=rotary_interleaved,
                            multi_latent_attention=multi_latent_attention, mscale=mscale)
        if freqs.requires_grad:  # angles that train (none of ours): keep autograd through them
            return compiled(rope_bshd)(t, freqs)
        return compiled(rope_cos_sin)(t, *cache.get(freqs, t.dtype))

    apply.compiled_route = True
    rope_utils._apply_rotary_pos_emb_bshd = apply
