"""ROUGE-L F as the python `rouge` package (1.0.1) computes it, which AceRAG uses for summaries.

That package splits both texts into "sentences" on '.', takes the summary-level union LCS over
word *sets* (its default `exclusive=True`), and divides by the number of distinct words.
"""
from __future__ import annotations


def _sentences(text: str) -> list[str]:
    # Empty pieces are dropped before whitespace is collapsed, so " . " keeps two empty sentences.
    return [" ".join(piece.split()) for piece in text.split(".") if len(piece) > 0]


def _words(sentences: list[str]) -> list[str]:
    return [word for sentence in sentences for word in sentence.split(" ")]


def lcs_words(x: list[str], y: list[str]) -> list[str]:
    """One longest common subsequence of `x` and `y`, with the `rouge` package's tie-breaking.

    The package backtracks from the end, moving up (in `x`) only when that cell is strictly
    larger, otherwise left; which LCS is returned matters because the score counts word sets.
    """
    n, m = len(x), len(y)
    table = [[0] * (m + 1) for _ in range(n + 1)]
    for i in range(1, n + 1):
        row, prev = table[i], table[i - 1]
        xi = x[i - 1]
        for j in range(1, m + 1):
            row[j] = prev[j - 1] + 1 if xi == y[j - 1] else max(prev[j], row[j - 1])
    out: list[str] = []
    i, j = n, m
    while i > 0 and j > 0:
        if x[i - 1] == y[j - 1]:
            out.append(x[i - 1])
            i, j = i - 1, j - 1
        elif table[i - 1][j] > table[i][j - 1]:
            i -= 1
        else:
            j -= 1
    out.reverse()
    return out


def rouge_l_scores(prediction: str, reference: str) -> dict[str, float]:
    """ROUGE-L precision, recall and F of `prediction` against `reference`, as `rouge` 1.0.1's
    `Rouge().get_scores(prediction, reference)[0]["rouge-l"]` (all 0.0 where that raises on empty input).

    Returns:
        {"p", "r", "f"}: P, R the union-LCS word-set size over the distinct word counts of the
        prediction and the reference, F = `2PR / (P + R + 1e-8)`.
    """
    hyp, ref = _sentences(prediction), _sentences(reference)
    if not hyp or not ref:
        return {"p": 0.0, "r": 0.0, "f": 0.0}
    union: set[str] = set()
    for ref_sentence in ref:
        ref_words = ref_sentence.split(" ")
        for hyp_sentence in hyp:
            union.update(lcs_words(ref_words, hyp_sentence.split(" ")))
    overlap = len(union)
    recall = overlap / len(set(_words(ref)))
    precision = overlap / len(set(_words(hyp)))
    return {"p": precision, "r": recall, "f": 2.0 * ((precision * recall) / (precision + recall + 1e-8))}


def rouge_l_f(prediction: str, reference: str) -> float:
    """ROUGE-L F score of `prediction` against `reference` (0.0 where `rouge` raises on empty input).

    Args:
        prediction: generated text.
        reference: one gold text.

    Returns:
        `2PR / (P + R + 1e-8)` with P, R the union-LCS word-set size over the distinct word counts.
    """
    return rouge_l_scores(prediction, reference)["f"]
