"""Encoder index selection of METHOD.md 2.3 (checklist item 1)."""
import numpy as np
import pytest

from acerag_megatron.data.indices import chunk_indices

VECTORS = [
    ((10, 4, 0), [3, 7, 9]),
    ((8, 4, 0), [3, 7]),
    ((9, 2, 0), [1, 3, 5, 7, 8]),
    ((10, 1, 0), list(range(1, 10))),
    ((7, 8, 0), [6]),
    ((1, 1, 0), []),
    ((12, 4, 3), [6, 10]),
    ((11, 4, 3), [6, 10, 10]),
]


@pytest.mark.parametrize("args,expected", VECTORS)
def test_stride_vectors(args, expected):
    assert chunk_indices(*args, "stride", None) == expected


def test_long_stride_vectors():
    a = chunk_indices(4096, 8, 0, "stride", None)
    assert a == list(range(7, 4096, 8)) and len(a) == 512
    b = chunk_indices(1905, 8, 0, "stride", None)
    assert len(b) == 239 and b[-3:] == [1895, 1903, 1904]
    c = chunk_indices(4096, 8, 20, "stride", None)
    assert len(c) == 509 and c[:2] == [27, 35] and c[-1] == 4091


@pytest.mark.parametrize("n,r,t", [(10, 4, 0), (11, 4, 3), (4096, 8, 20), (10, 1, 0), (300, 2, 5), (7, 8, 0)])
def test_random_sorted_distinct_in_range(n, r, t):
    rng = np.random.default_rng(0)
    base = chunk_indices(n, r, t, "stride", None)
    got = chunk_indices(n, r, t, "random", rng)
    assert len(got) == len(base)
    assert got == sorted(set(got)), "random indices must be sorted and distinct"
    assert all(t <= i < n for i in got)


def test_random_varies_with_generator_and_is_reproducible():
    a = chunk_indices(400, 4, 0, "random", np.random.default_rng(1))
    b = chunk_indices(400, 4, 0, "random", np.random.default_rng(1))
    c = chunk_indices(400, 4, 0, "random", np.random.default_rng(2))
    assert a == b and a != c


def test_terminal_and_errors():
    assert chunk_indices(10, 4, 0, "terminal", None) == [7, 8, 9]
    assert chunk_indices(11, 4, 3, "terminal", None) == [8, 9, 10]
    with pytest.raises(ValueError):
        chunk_indices(10, 4, 0, "random", None)
    with pytest.raises(ValueError):
        chunk_indices(10, 4, 0, "middle", None)
