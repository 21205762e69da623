"""Token-level selective compression driven by per-token importance scores."""
import math

import pytest

from acerag_megatron.inference.selective import important_positions, selective_indices


def test_important_positions():
    scores = [0, 5, 1, 9, 2, 0, 0, 0]
    assert important_positions(scores, 0.25, 1) == [1, 3]
    assert important_positions(scores, 0.1, 1) == []
    # thinning at low ratio 2 keeps every second (in position order) plus the last one
    assert important_positions([9, 8, 7, 0, 0, 0], 0.5, 2) == [0, 2]
    assert important_positions([9, 8, 7, 6, 0, 0, 0, 0], 0.5, 3) == [0, 3]


def test_selective_indices_hand_example():
    # one chunk [BOS] + 32 context tokens, r=4 -> budget 8; 4 important tokens at context 10..13
    scores = [1.0 if 10 <= i <= 13 else 0.0 for i in range(32)]
    got = selective_indices([33], 1, 0, scores, 4, context_proportion=0.125)
    # high ratio ceil((32 - 4) / (8 - 4)) = 7: grid 6,13,20,27 + last 32; important at chunk 11..14
    assert got == [[6, 11, 12, 13, 14, 20, 27, 32]]
    assert sum(map(len, got)) <= math.ceil(32 / 4)


def test_selective_indices_multi_chunk_and_fallbacks():
    scores = [0.0] * 25
    scores[12] = 5.0
    got = selective_indices([11, 11, 6], 1, 0, scores, 2, context_proportion=0.04)
    assert 3 in got[1]  # context 12 = chunk 1 (step 10), position 1 + 2
    assert sum(map(len, got)) <= math.ceil(25 / 2)
    assert selective_indices([11], 1, 0, [0.0] * 10, 2, context_proportion=0.0) is None
    # everything important at ratio 1 leaves no budget for the rest -> uniform fallback
    assert selective_indices([11], 1, 0, list(range(10)), 2, context_proportion=0.5) is None
    with pytest.raises(ValueError, match="importance scores"):
        selective_indices([11], 1, 0, [0.0] * 9, 2)
