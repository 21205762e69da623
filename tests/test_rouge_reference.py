"""ROUGE-L equals the `rouge` 1.0.1 package on many seeded random texts and on its edge cases."""
from __future__ import annotations

import random

import pytest

rouge = pytest.importorskip("rouge")

from acerag_megatron.inference.rouge import rouge_l_f, rouge_l_scores  # noqa: E402

VOCAB = ["a", "b", "c", "d", "e", "the", "cat", "Cat", "mat", "7", "x-y", "naïve"]
SEPARATORS = [" ", " ", " ", " ", "  ", "\t", "\n", ". ", ".", " . ", "..", " \u00a0"]


def _random_text(rng: random.Random) -> str:
    """Words from a small vocabulary (many repeats, so ties in the LCS are common) joined by mixed
    whitespace and sentence dots, sometimes with leading/trailing separators."""
    n = rng.choice([0, 1, 1, 2, 3, rng.randint(4, 12), rng.randint(13, 60)])
    vocab = VOCAB[: rng.randint(1, len(VOCAB))]
    words = [rng.choice(vocab) for _ in range(n)]
    text = "".join(w + rng.choice(SEPARATORS) for w in words)
    if rng.random() < 0.3:
        text = rng.choice(SEPARATORS) + text
    if rng.random() < 0.5:
        text = text.rstrip(" .\t\n")
    return text


EDGE_CASES = [
    ("", ""), ("", "a"), ("a", ""), (".", "a"), ("a", "..."), (" ", "a"), ("a", " "), (" . ", "a b"),
    ("a", "a"), ("a", "b"), ("a a a a", "a"), ("a", "a a a a"), ("a b a b a b", "b a b a"),
    ("the cat. the mat. the cat", "the mat. a cat sat"), ("a. a. a.", "a"), ("a\tb\nc", "c b a"),
    ("x" * 50, "x" * 50), (" ".join(["a"] * 200), " ".join(["a", "b"] * 100)),
]


def _reference(hyp: str, ref: str) -> dict[str, float] | None:
    try:
        return rouge.Rouge(metrics=["rouge-l"]).get_scores(hyp, ref)[0]["rouge-l"]
    except ValueError:  # the package raises on a text with no sentence
        return None


def _assert_same(hyp: str, ref: str) -> None:
    expected = _reference(hyp, ref)
    got = rouge_l_scores(hyp, ref)
    if expected is None:
        assert got == {"p": 0.0, "r": 0.0, "f": 0.0}, (hyp, ref)
    else:
        for stat in ("p", "r", "f"):
            assert got[stat] == pytest.approx(expected[stat], abs=1e-9), (stat, hyp, ref)
    assert rouge_l_f(hyp, ref) == got["f"]


@pytest.mark.parametrize("hyp,ref", EDGE_CASES)
def test_rouge_l_edge_cases_match_package(hyp, ref):
    _assert_same(hyp, ref)


def test_rouge_l_random_texts_match_package():
    rng = random.Random(20240611)
    for _ in range(3000):
        _assert_same(_random_text(rng), _random_text(rng))
