"""Core attention on torch scaled_dot_product_attention for the local layer spec.

Megatron's local DotProductAttention materialises the score matrix (2.2x slower, 2x the
memory on GPU); this module is a drop-in for the spec's `core_attention` slot.
Shapes: s sequence, b batch, h heads (this TP rank), g query groups, d head dim.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from megatron.core.transformer.enums import AttnMaskType
from megatron.core.transformer.module import MegatronModule


class SDPAttention(MegatronModule):
    """Causal / masked attention through torch SDPA.

    Mask convention (Megatron's): a bool tensor broadcastable to [b, 1, sq, sk], True = masked.
    A None mask means causal. Rows that mask every key attend to themselves instead of
    producing NaN (left padding), keeping padded rows finite and out of every real row.
    """

    def __init__(self, config, layer_number: int, attn_mask_type: AttnMaskType, attention_type: str = "self",
                 attention_dropout: float | None = None, softmax_scale: float | None = None,
                 cp_comm_type: str | None = None, pg_collection=None, flash_only: bool = False):
        super().__init__(config=config)
        if config.context_parallel_size > 1:
            raise ValueError("SDPAttention does not support context parallelism")
        self.attn_mask_type = attn_mask_type
        self.dropout_p = config.attention_dropout if attention_dropout is None else attention_dropout
        head_dim = config.kv_channels
        self.softmax_scale = softmax_scale or config.softmax_scale or 1.0 / math.sqrt(head_dim)
        self.flash_only = flash_only

    def forward(self, query, key, value, attention_mask, attn_mask_type=None, attention_bias=None,
                packed_seq_params=None):
        """q [sq,b,h,d], k/v [sk,b,g,d] -> [sq,b,h*d]."""
        if packed_seq_params is not None or attention_bias is not None:
            raise ValueError("SDPAttention supports neither packed_seq_params nor attention_bias")
        sq, b, h, d = query.shape
        q_bhsd, k_bgsd, v_bgsd = (t.permute(1, 2, 0, 3) for t in (query, key, value))
        mask_type = attn_mask_type or self.attn_mask_type
        kwargs = dict(dropout_p=self.dropout_p if self.training else 0.0, scale=self.softmax_scale,
                      enable_gqa=k_bgsd.shape[1] != h)
        if attention_mask is None:
            kwargs["is_causal"] = mask_type == AttnMaskType.causal
        else:
            allowed = ~attention_mask
            # Applied unconditionally: testing first would cost a device sync per layer.
            none_allowed = ~allowed.any(dim=-1, keepdim=True)
            eye = torch.eye(allowed.shape[-2], allowed.shape[-1], dtype=torch.bool, device=allowed.device)
            allowed = allowed | (none_allowed & eye)
            kwargs["attn_mask"] = allowed
        if self.flash_only:
            from torch.nn.attention import SDPBackend, sdpa_kernel

            with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
                out_bhsd = F.scaled_dot_product_attention(q_bhsd, k_bgsd, v_bgsd, **kwargs)
        else:
            out_bhsd = F.scaled_dot_product_attention(q_bhsd, k_bgsd, v_bgsd, **kwargs)
        return out_bhsd.permute(2, 0, 1, 3).reshape(sq, b, h * d)
