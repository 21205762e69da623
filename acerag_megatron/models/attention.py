"""Core attention modules for the local layer spec: torch SDPA and FlexAttention.

Megatron's local DotProductAttention materialises the score matrix (2.2x slower, 2x the
memory on GPU); these modules are drop-ins for the spec's `core_attention` slot.
Shapes: s sequence, b batch, h heads (this TP rank), g query groups, d head dim.
Masks: None = causal; Megatron's dense bool broadcastable to [b, 1, sq, sk], True = masked; or
a packed-row spec [b, 2 or 3, s] (see packed_mask.py), which FlexAttention reads directly.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from megatron.core.transformer.enums import AttnMaskType
from megatron.core.transformer.module import MegatronModule

from acerag_megatron.models import packed_mask


class _AllowedMaskCache:
    """SDPA's 'True = attend' mask, computed once per Megatron mask tensor and shared by every layer.

    Rows that mask every key are let attend to themselves (finite instead of NaN). Holding the
    mask tensor keeps its identity unique while cached; a new mask replaces it.
    """

    def __init__(self):
        self.key = None
        self.allowed = None

    def get(self, attention_mask: torch.Tensor) -> torch.Tensor:
        if self.key is None or self.key[0] is not attention_mask or self.key[1] != attention_mask._version:
            allowed = ~packed_mask.for_backend(attention_mask, dense=True)
            # Applied unconditionally: testing first would cost a device sync.
            none_allowed = ~allowed.any(dim=-1, keepdim=True)
            eye = torch.eye(allowed.shape[-2], allowed.shape[-1], dtype=torch.bool, device=allowed.device)
            # _version changes on in-place edits, so a refilled buffer is not served stale.
            self.key, self.allowed = (attention_mask, attention_mask._version), allowed | (none_allowed & eye)
        return self.allowed


_ALLOWED = _AllowedMaskCache()


class SDPAttention(MegatronModule):
    """Attention through torch scaled_dot_product_attention.

    Rows that mask every key attend to themselves instead of producing NaN (left padding),
    which keeps padded rows finite and out of every real row.
    """

    def __init__(self, config, layer_number: int, attn_mask_type: AttnMaskType, attention_type: str = "self",
                 attention_dropout: float | None = None, softmax_scale: float | None = None,
                 cp_comm_type: str | None = None, pg_collection=None, flash_only: bool = False):
        super().__init__(config=config)
        if config.context_parallel_size > 1:
            raise ValueError(f"{type(self).__name__} does not support context parallelism")
        self.attn_mask_type = attn_mask_type
        self.dropout_p = config.attention_dropout if attention_dropout is None else attention_dropout
        self.softmax_scale = softmax_scale or config.softmax_scale or 1.0 / math.sqrt(config.kv_channels)
        self.flash_only = flash_only

    def forward(self, query, key, value, attention_mask, attn_mask_type=None, attention_bias=None,
                packed_seq_params=None):
        """q [sq,b,h,d], k/v [sk,b,g,d] -> [sq,b,h*d]."""
        if packed_seq_params is not None or attention_bias is not None:
            raise ValueError(f"{type(self).__name__} supports neither packed_seq_params nor attention_bias")
        sq, b, h, d = query.shape
        # Megatron's value is a view into the fused QKV projection output; saved as is for the
        # backward, it would keep all of Q, K and V alive (q and k are fresh RoPE outputs), 2x
        # hidden more per token and layer for multi-head attention. A copy of V frees the rest.
        q_bhsd, k_bgsd, v_bgsd = (t.permute(1, 2, 0, 3) for t in (query, key, value.contiguous()))
        causal = (attn_mask_type or self.attn_mask_type) == AttnMaskType.causal
        out_bhsd = self.attend(q_bhsd, k_bgsd, v_bgsd, attention_mask, causal)
        return out_bhsd.permute(2, 0, 1, 3).reshape(sq, b, h * d)

    def attend(self, q_bhsd, k_bgsd, v_bgsd, attention_mask, causal: bool):
        if self.flash_only and attention_mask is not None:
            # Flash kernels take no mask; SDPA would fail with "no available kernel" at best.
            raise ValueError(f"flash-pinned SDPA takes no explicit mask (got a {_mask_kind(attention_mask)} mask)")
        kwargs = dict(dropout_p=self.dropout_p if self.training else 0.0, scale=self.softmax_scale)
        groups, heads = k_bgsd.shape[1], q_bhsd.shape[1]
        if attention_mask is None:
            kwargs.update(is_causal=causal, enable_gqa=groups != heads)  # flash kernels take GQA directly
        else:
            if groups != heads:
                # With an explicit mask only the math kernel takes GQA (it materialises the scores);
                # repeated K/V heads let the memory-efficient kernel run instead.
                k_bgsd = k_bgsd.repeat_interleave(heads // groups, dim=1)
                v_bgsd = v_bgsd.repeat_interleave(heads // groups, dim=1)
            kwargs["attn_mask"] = _ALLOWED.get(attention_mask)
        if not self.flash_only:
            return F.scaled_dot_product_attention(q_bhsd, k_bgsd, v_bgsd, **kwargs)
        from torch.nn.attention import SDPBackend, sdpa_kernel

        with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
            return F.scaled_dot_product_attention(q_bhsd, k_bgsd, v_bgsd, **kwargs)


class _BlockMaskCache:
    """One block mask per attention mask tensor, shared by every layer of a forward pass.

    Holding the mask tensor keeps its identity unique while cached; a new mask replaces it.
    """

    def __init__(self):
        self.key = None
        self.block_mask = None

    def get(self, attention_mask, batch: int, sq: int, sk: int, device):
        from torch.nn.attention.flex_attention import create_block_mask

        version = attention_mask._version if attention_mask is not None else 0
        key = (attention_mask, version, batch, sq, sk, str(device))
        if self.key is not None and key[0] is self.key[0] and key[1:] == self.key[1:]:
            return self.block_mask
        if attention_mask is None:
            def mask_mod(b, h, q_idx, kv_idx):
                return q_idx >= kv_idx
            self.block_mask = create_block_mask(mask_mod, None, None, sq, sk, device=device)
        elif packed_mask.is_packed_mask(attention_mask):
            spec = attention_mask.expand(batch, attention_mask.shape[1], sq)
            self.block_mask = create_block_mask(packed_mask.mask_mod(spec), batch, None, sq, sk, device=device)
        else:
            allowed = ~attention_mask.expand(batch, 1, sq, sk)

            def mask_mod(b, h, q_idx, kv_idx):
                return allowed[b, 0, q_idx, kv_idx]
            self.block_mask = create_block_mask(mask_mod, batch, None, sq, sk, device=device)
        self.key = key
        return self.block_mask


_BLOCK_MASKS = _BlockMaskCache()
_compiled_flex = None


def _flex(*args, **kwargs):
    """flex_attention, compiled on GPU (the eager path materialises scores and is for CPU tests)."""
    global _compiled_flex
    from torch.nn.attention.flex_attention import flex_attention

    if not args[0].is_cuda:
        return flex_attention(*args, **kwargs)
    if _compiled_flex is None:
        # Automatic dynamic shapes: packed rows change length every step, and a static
        # compile would recompile per length until dynamo's cache limit, then run eagerly.
        _compiled_flex = torch.compile(flex_attention)
    return _compiled_flex(*args, **kwargs)


class FlexAttention(SDPAttention):
    """Attention through FlexAttention with a block-sparse mask built from the dense bool mask;
    rows without a mask (plain causal) go through SDPA.

    Packed micro-batches (document masks, the one-pass window formulation) are mostly empty
    blocks, which FlexAttention skips. Fully masked rows produce zeros.
    """

    def attend(self, q_bhsd, k_bgsd, v_bgsd, attention_mask, causal: bool):
        if self.training and self.dropout_p > 0:
            raise ValueError("FlexAttention does not support attention dropout")
        if attention_mask is None:
            # Plain causal (or full) rows: SDPA's flash kernel beats a causal block mask.
            return super().attend(q_bhsd, k_bgsd, v_bgsd, None, causal)
        b, _, sq, _ = q_bhsd.shape
        block_mask = _BLOCK_MASKS.get(attention_mask, b, sq, k_bgsd.shape[2], q_bhsd.device)
        return _flex(q_bhsd, k_bgsd, v_bgsd, block_mask=block_mask, scale=self.softmax_scale,
                     enable_gqa=k_bgsd.shape[1] != q_bhsd.shape[1])


def _mask_kind(attention_mask) -> str:
    return "packed-row spec" if packed_mask.is_packed_mask(attention_mask) else "dense"


class CausalOnly(MegatronModule):
    """An attention that honours only its causal mask type (Transformer Engine's fused attention,
    flash kernels), refusing any explicit mask instead of silently ignoring it."""

    def __init__(self, config, inner: torch.nn.Module, name: str):
        super().__init__(config=config)
        self.inner, self.name = inner, name

    def forward(self, query, key, value, attention_mask, attn_mask_type=None, attention_bias=None,
                packed_seq_params=None):
        if attention_mask is not None:
            raise ValueError(f"{self.name} attention honours only its causal mask type; a {_mask_kind(attention_mask)} "
                             "mask must go to a backend that reads it (flex, sdpa, unfused)")
        return self.inner(query, key, value, None, attn_mask_type=AttnMaskType.causal,
                          attention_bias=attention_bias, packed_seq_params=packed_seq_params)


class MaskRoutedAttention(MegatronModule):
    """Rows without a mask go to `causal` (wrapped in CausalOnly); masked rows go to `masked`, a
    module that reads the mask. Both are built from specs with Megatron's core-attention arguments.

    One forward receives one mask for the whole micro-batch, so routing is per micro-batch:
    plain causal batches use the fastest kernel, packed windows and document masks stay exact.
    """

    def __init__(self, config, layer_number: int, attn_mask_type: AttnMaskType, attention_type: str = "self",
                 attention_dropout: float | None = None, softmax_scale: float | None = None,
                 cp_comm_type: str | None = None, pg_collection=None, *, causal, masked, causal_name: str):
        super().__init__(config=config)
        kwargs = dict(config=config, layer_number=layer_number, attn_mask_type=attn_mask_type,
                      attention_type=attention_type, softmax_scale=softmax_scale, cp_comm_type=cp_comm_type,
                      pg_collection=pg_collection)
        if attention_dropout is not None:
            kwargs["attention_dropout"] = attention_dropout
        self.causal = CausalOnly(config, causal(**kwargs), causal_name)
        self.masked = masked(**kwargs)

    def forward(self, query, key, value, attention_mask, attn_mask_type=None, attention_bias=None,
                packed_seq_params=None):
        target = self.causal if attention_mask is None else self.masked
        return target(query, key, value, attention_mask, attn_mask_type=attn_mask_type,
                      attention_bias=attention_bias, packed_seq_params=packed_seq_params)
