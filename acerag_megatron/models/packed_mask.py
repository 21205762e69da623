"""Attention masks of packed rows as two (or three) integers per token instead of an [S, S] matrix.

Every mask a packed row needs has one shape:

    allowed(q, k) = (segment[q] == segment[k] and k <= q) or prefix_start[q] <= k < prefix_end[q]

- packed window mode: the compressed prefix C_0..C_{n-2} is segment 0 (causal over itself);
  window W_k is segment k with prefix_end = |C_<k|, so it sees the compressed windows before it
  and itself causally;
- packed finetuning: sample j is segment j, prefix_end = 0 (a document mask);
- several packed window documents in one row: each document's segments are its own, and its
  windows' prefixes start at the document's start (prefix_start), so no document sees another;
- padding: each pad token is a segment of its own (it sees only itself, stays finite).

The spec travels as one int64 tensor [B, 2, S] (row 0 segment, row 1 prefix_end; every prefix
starts at 0) or [B, 3, S] (segment, prefix_start, prefix_end) in the
`attention_mask` slot: a few kilobytes per micro-batch to build, copy and keep, where a dense
mask is S^2 bytes (118 MB for the 8192-token Llama window sample, 440 MB at 16,000 tokens).
FlexAttention evaluates it directly as a mask_mod; SDPA and the dense-mask backends get the
[B, 1, S, S] matrix built on the device, once per micro-batch.
"""
from __future__ import annotations

import numpy as np
import torch


def is_packed_mask(mask) -> bool:
    """True for a [B, 2, S] or [B, 3, S] integer spec; False for None or a dense bool mask."""
    return mask is not None and mask.dtype != torch.bool and mask.dim() == 3 and mask.shape[1] in (2, 3)


def packed_mask(segment: np.ndarray, prefix_end: np.ndarray, prefix_start: np.ndarray | None = None) -> torch.Tensor:
    """[S] segment ids and prefix bounds -> the int64 spec of one row: [1, 2, S] when every
    prefix starts at 0, else [1, 3, S]."""
    rows = [segment, prefix_end] if prefix_start is None or not prefix_start.any() else [segment, prefix_start, prefix_end]
    return torch.from_numpy(np.stack(rows).astype(np.int64)).unsqueeze(0)


def prefix_bounds(spec: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
    """(prefix_start or None when every prefix starts at 0, prefix_end), each [B, S]."""
    return (spec[:, 1] if spec.shape[1] == 3 else None), spec[:, -1]


def allowed_pairs(segment: np.ndarray, prefix_end: np.ndarray, prefix_start: np.ndarray | None = None) -> int:
    """Number of (query, key) pairs the mask allows, in O(S); segments must be contiguous runs
    and every prefix must end before the query's own segment starts."""
    starts = np.r_[True, segment[1:] != segment[:-1]]
    run_start = np.maximum.accumulate(np.where(starts, np.arange(len(segment)), 0))
    prefix = prefix_end.sum() - (prefix_start.sum() if prefix_start is not None else 0)
    return int((np.arange(len(segment)) - run_start + 1).sum() + prefix)


def dense_masked(spec: torch.Tensor) -> torch.Tensor:
    """The spec as Megatron's dense mask: bool [B, 1, S, S], True = masked."""
    segment = spec[:, 0]
    prefix_start, prefix_end = prefix_bounds(spec)
    s = spec.shape[-1]
    idx = torch.arange(s, device=spec.device)
    allowed = (segment[:, :, None] == segment[:, None, :]) & (idx[None, None, :] <= idx[None, :, None])
    in_prefix = idx[None, None, :] < prefix_end[:, :, None]
    if prefix_start is not None:
        in_prefix &= idx[None, None, :] >= prefix_start[:, :, None]
    allowed |= in_prefix
    return (~allowed).unsqueeze(1)


def for_backend(mask, dense: bool):
    """The mask as the attention backend takes it: specs become dense matrices where `dense`
    (Megatron's unfused attention); anything else passes through."""
    return dense_masked(mask) if dense and is_packed_mask(mask) else mask


def dense_backend(device_info) -> bool:
    """Our SDPA and Flex modules read specs; Megatron's own attention needs the matrix. Masked
    rows never reach TE (device.py), so its mask format does not matter."""
    return device_info.masked_attention == "unfused"


def mask_mod(spec: torch.Tensor):
    """The spec as a FlexAttention mask_mod (b, h, q_idx, kv_idx) -> allowed."""
    segment = spec[:, 0]
    prefix_start, prefix_end = prefix_bounds(spec)

    def allowed(b, h, q_idx, kv_idx):
        same = (segment[b, q_idx] == segment[b, kv_idx]) & (kv_idx <= q_idx)
        return same | (kv_idx < prefix_end[b, q_idx])

    def allowed_from(b, h, q_idx, kv_idx):
        same = (segment[b, q_idx] == segment[b, kv_idx]) & (kv_idx <= q_idx)
        return same | ((kv_idx < prefix_end[b, q_idx]) & (kv_idx >= prefix_start[b, q_idx]))

    return allowed if prefix_start is None else allowed_from
