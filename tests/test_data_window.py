"""Window-mode segmentation, grouping and labels (METHOD.md 3.2-3.6; checklist items 2-3)."""
import numpy as np
import pytest

from acerag_megatron import PRETRAIN_PLACEHOLDER_TOKEN_ID
from acerag_megatron.data.window import build_window_sample


class FixedRatios:
    """A generator stand-in returning given ratios, delegating permutations to a real Generator."""

    def __init__(self, ratios, seed=0):
        self.ratios, self.rng = list(ratios), np.random.default_rng(seed)

    def choice(self, candidates):
        r = self.ratios.pop(0)
        assert r in list(candidates)
        return r

    def permutation(self, n):
        return self.rng.permutation(n)


def build(total, ratios, method="stride", **kw):
    return build_window_sample(np.arange(total) + 3, window=1024, encoder_max_length=4096,
                               comp_candidates=[1, 2, 4, 8], method=method, rng=FixedRatios(ratios), **kw)


@pytest.mark.parametrize("total,ratios,segs,m,groups,mem,targets", [
    (5000, (8, 4, 2, 1, 8), [1024] * 4 + [904], [128, 256, 512, 1024], [4096], [128, 384, 896, 1920],
     1024 * 3 + 904),
    (6200, (1, 2, 4, 8, 1, 2, 4), [1024] * 6 + [56], [1024, 512, 256, 128, 1024, 512], [4096, 2048],
     [1024, 1536, 1792, 1920, 2944, 3456], 1024 * 5 + 56),
    (1025, (2, 1), [1024, 1], [512], [1024], [512], 1),
])
def test_worked_examples(total, ratios, segs, m, groups, mem, targets):
    s = build(total, ratios)
    assert [e - b for b, e in s.segments] == segs
    assert [len(z) for z in s.selected] == m
    assert [e - b for b, e in s.groups] == groups
    assert s.memory_lengths == mem
    assert s.num_targets == targets
    assert len(s.ratios) == len(segs)
    # groups tile the non-last segments contiguously from the document start
    assert s.groups[0][0] == 0 and s.groups[-1][1] == s.segments[-1][0]
    assert all(a[1] == b[0] for a, b in zip(s.groups, s.groups[1:]))


def test_stride_positions_are_block_ends():
    s = build(5000, (8, 4, 2, 1, 1))
    assert s.selected[0].tolist() == list(range(7, 1024, 8))
    assert s.selected[1].tolist() == list(range(1024 + 3, 2048, 4))
    assert s.selected[3].tolist() == list(range(3072, 4096))


def test_random_is_unsorted_permutation_subset():
    s = build(5000, (1, 2, 4, 8, 1), method="random")
    for i, z in enumerate(s.selected):
        start, end = s.segments[i]
        assert len(z) == (end - start) // s.ratios[i]
        assert len(set(z.tolist())) == len(z) and z.min() >= start and z.max() < end
    assert not np.all(np.diff(s.selected[0]) > 0), "reference order is a random permutation (A1)"
    assert sorted(s.selected[0].tolist()) == list(range(0, 1024))
    t = build(5000, (1, 2, 4, 8, 1), method="random", sort_random_indices=True)
    assert all(np.all(np.diff(z) > 0) for z in t.selected)


def test_window_labels():
    s = build(3000, (4, 2, 1))
    for k in (1, 2):
        ids, labels = s.window_inputs(k)
        mu = s.memory_lengths[k - 1]
        start, end = s.segments[k]
        assert (ids[:mu] == PRETRAIN_PLACEHOLDER_TOKEN_ID).all() and (labels[:mu] == -100).all()
        assert (labels[mu:] == s.tokens[start:end]).all() and len(labels) == mu + end - start
    with pytest.raises(IndexError):
        s.window_inputs(0)  # segment 0 is never a prediction target


def test_single_segment_rejected_and_ratio_draws_deterministic():
    with pytest.raises(ValueError):
        build(1024, (1,))
    kw = dict(window=64, encoder_max_length=256, comp_candidates=[1, 2, 4, 8], method="random")
    a = build_window_sample(np.arange(1000), rng=np.random.default_rng(5), **kw)
    b = build_window_sample(np.arange(1000), rng=np.random.default_rng(5), **kw)
    assert a.ratios == b.ratios and all((x == y).all() for x, y in zip(a.selected, b.selected))
