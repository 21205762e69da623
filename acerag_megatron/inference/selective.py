"""Token-level selective compression (METHOD.md 8.2), driven by a per-token importance score.

The most important `context_proportion` of the context tokens are kept at `low_comp_ratio`
(1 = every selected token gets its own encoder state); the rest of the context is compressed at
the uniform ratio `high` that keeps the total within the uniform budget `ceil(n / r)`, the
selected positions being unioned with the stride grid of ratio `high` in each chunk (AceRAG's
`token_level_adaptation`). AceRAG scores tokens with a trained embedding model; here the caller
supplies the scores, so any scorer can drive it.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from acerag_megatron.data.indices import stride_indices

MAX_HIGH_RATIO = 400
"""Above this ratio for the remaining context the allocation falls back to uniform compression."""


def important_positions(scores: Sequence[float], context_proportion: float, low_comp_ratio: int) -> list[int]:
    """Context positions kept at the low ratio: the top `floor(p * n)` by score, then every
    `low_comp_ratio`-th of them in position order (plus the last one, as AceRAG's thinning does)."""
    num = math.floor(context_proportion * len(scores))
    if num <= 0:
        return []
    top = sorted(int(i) for i in np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")[:num])
    kept = top[::low_comp_ratio]
    if len(top) % low_comp_ratio != 0 and kept[-1] != top[-1]:
        kept.append(top[-1])
    return kept


def selective_indices(chunk_lengths: Sequence[int], prefix_length: int, num_instruction_tokens: int,
                      scores: Sequence[float], ratio: int, *, context_proportion: float = 0.0625,
                      low_comp_ratio: int = 1) -> list[list[int]] | None:
    """Per-chunk encoder indices of selective compression, or None when uniform `ratio` should be used.

    Args:
        chunk_lengths: length of each encoder chunk (`prefix + piece`).
        prefix_length: BOS + instruction tokens at the start of every chunk.
        num_instruction_tokens: T (the stride grid starts after it, as in uniform selection).
        scores: importance of each context token (the concatenated pieces), higher = keep.
        ratio: the uniform ratio r that sets the budget `ceil(n / r)`.
        context_proportion: fraction of the context treated as important.
        low_comp_ratio: ratio applied to the important tokens.
    """
    pieces = [n - prefix_length for n in chunk_lengths]
    num_context = sum(pieces)
    if len(scores) != num_context:
        raise ValueError(f"{len(scores)} importance scores for {num_context} context tokens")
    low = important_positions(scores, context_proportion, low_comp_ratio)
    budget = math.ceil(num_context / ratio)
    remain = budget - len(low)
    if not low or remain <= 0:
        return None
    high = math.ceil((num_context - len(low)) / remain)
    if high >= MAX_HIGH_RATIO:
        return None
    step = pieces[0]
    selected: list[list[int]] = [[] for _ in chunk_lengths]
    for p in low:
        selected[p // step].append(prefix_length + p % step)
    while True:
        indices = [sorted(set(stride_indices(n, high, num_instruction_tokens)) | set(sel))
                   for n, sel in zip(chunk_lengths, selected)]
        if sum(len(i) for i in indices) <= budget:
            return indices
        high += 1
        if high > MAX_HIGH_RATIO:
            return None
