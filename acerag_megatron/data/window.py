"""Window-mode pretraining sample: segments, ratios, encoder groups, selected states (METHOD.md 3.2-3.4)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from acerag_megatron import IGNORE_INDEX, PRETRAIN_PLACEHOLDER_TOKEN_ID



@dataclass
class WindowSample:
    """One pretraining document cut into windows.

    All positions are absolute token positions of the document. Encoder group g covers
    tokens[groups[g][0]:groups[g][1]] and runs as its own sequence with positions from 0.
    """

    tokens: np.ndarray
    """int64 [S] document tokens."""
    segments: list[tuple[int, int]]
    """(start, end) of every segment; all but the last have length `window`."""
    ratios: list[int]
    """One ratio per segment; the last one is drawn but never used."""
    selected: list[np.ndarray]
    """For each non-last segment i, the positions whose encoder states form Z_i, in LM order."""
    groups: list[tuple[int, int]]
    """Encoder groups as (start, end) token ranges."""

    @property
    def memory_lengths(self) -> list[int]:
        """mu_k for k = 1..N-1: placeholders in front of window k (all previous Z_i)."""
        sizes = np.cumsum([len(z) for z in self.selected])
        return [int(s) for s in sizes]

    @property
    def num_targets(self) -> int:
        """Predicted tokens over all windows (the first raw token needs at least one memory slot)."""
        total = 0
        for mu, (start, end) in zip(self.memory_lengths, self.segments[1:]):
            total += (end - start) if mu >= 1 else (end - start - 1)
        return total

    def window_inputs(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """LM input ids and unshifted labels of window k (1 <= k < N), as the reference loop builds them."""
        if not 1 <= k < len(self.segments):
            raise IndexError(f"window {k} out of range 1..{len(self.segments) - 1}")
        mu = self.memory_lengths[k - 1]
        start, end = self.segments[k]
        raw = self.tokens[start:end]
        ids = np.concatenate([np.full(mu, PRETRAIN_PLACEHOLDER_TOKEN_ID, dtype=np.int64), raw])
        labels = np.concatenate([np.full(mu, IGNORE_INDEX, dtype=np.int64), raw])
        return ids, labels


def _select(start: int, length: int, r: int, method: str, rng: np.random.Generator, sort: bool) -> np.ndarray:
    m = length // r
    if method == "stride":
        local = r * (np.arange(m, dtype=np.int64) + 1) - 1
    elif method == "random":
        # Reference: torch.randperm(L)[:m], unsorted -> states enter the LM shuffled (METHOD.md A1).
        local = rng.permutation(length)[:m].astype(np.int64)
        if sort:
            local = np.sort(local)
    else:
        raise ValueError(f"unknown pretraining down-scaling method {method!r}; expected 'stride' or 'random'")
    return start + local


def build_window_sample(tokens, *, window: int, encoder_max_length: int, comp_candidates, method: str,
                        rng: np.random.Generator, sort_random_indices: bool = False) -> WindowSample:
    """Cut a document into windows, draw one ratio per segment and select the encoder states.

    Args:
        tokens: document token ids (length S > window).
        window: W, segment length.
        encoder_max_length: E; segments are packed into encoder groups until a group reaches E.
        comp_candidates: ratios drawn uniformly, one per segment (the last segment's draw is unused).
        method: 'stride' or 'random' (unsorted permutation subset, as the reference).
        rng: numpy Generator seeded per (seed, epoch, sample).
        sort_random_indices: sort the random subset (ablation switch for METHOD.md A1).

    Raises:
        ValueError: for a single-segment document (S <= W), which the reference cannot train on (A8).
    """
    tokens = np.asarray(tokens, dtype=np.int64)
    total = len(tokens)
    num_segments = math.ceil(total / window)
    if num_segments < 2:
        raise ValueError(f"window sample needs more than window={window} tokens, got {total}")
    segments = [(i * window, min((i + 1) * window, total)) for i in range(num_segments)]
    candidates = np.asarray(list(comp_candidates), dtype=np.int64)
    ratios = [int(rng.choice(candidates)) for _ in range(num_segments)]
    selected = [
        _select(start, end - start, ratios[i], method, rng, sort_random_indices)
        for i, (start, end) in enumerate(segments[:-1])
    ]
    groups: list[tuple[int, int]] = []
    group_start, group_size = 0, 0
    for i, (start, end) in enumerate(segments):
        # The reference closes a group when it has reached E *before* adding the next segment.
        if group_size >= encoder_max_length or i == num_segments - 1:
            if group_size > 0:
                groups.append((group_start, group_start + group_size))
            group_start, group_size = start, 0
            if i == num_segments - 1:
                break
        group_size += end - start
    return WindowSample(tokens=tokens, segments=segments, ratios=ratios, selected=selected, groups=groups)
