"""Answer scoring for AceRAG evaluation: normalised EM, LongBench token F1, ROUGE-L, classification.

Each scorer takes one prediction and one gold answer; `best_score` takes the max over golds, as
AceRAG's `Metric.compute` does. Definitions follow AceRAG's metric module (LongBench lineage).
"""
from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Callable, Sequence

from acerag_megatron.inference.rouge import rouge_l_f

_PUNCTUATION = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """Lower-case, strip ASCII punctuation, drop the articles a/an/the, collapse whitespace."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def exact_match(prediction: str, answer: str, **_: object) -> float:
    """1.0 when the normalised strings are equal, else 0.0."""
    return float(normalize_answer(prediction) == normalize_answer(answer))


def qa_f1(prediction: str, answer: str, **_: object) -> float:
    """Token-level F1 between the normalised, whitespace-split prediction and answer."""
    pred_tokens = normalize_answer(prediction).split()
    gold_tokens = normalize_answer(answer).split()
    num_same = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
    if num_same == 0:
        return 0.0
    precision = num_same / len(pred_tokens)
    recall = num_same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def rouge_l(prediction: str, answer: str, **_: object) -> float:
    """ROUGE-L F (python `rouge` semantics); see `acerag_megatron.inference.rouge`."""
    return rouge_l_f(prediction, answer)


def classification_score(prediction: str, answer: str, all_classes: Sequence[str] | None = None,
                         **_: object) -> float:
    """LongBench classification score, case-insensitive as in AceRAG.

    Every class name found in the prediction is a match; a match that is a proper substring of
    the gold is discarded; the score is 1/|matches| when the gold is among them, else 0.

    Raises:
        ValueError: when `all_classes` is missing.
    """
    if not all_classes:
        raise ValueError("classification_score needs the record's all_classes")
    pred, gold = prediction.lower(), answer.lower()
    matches = [name.lower() for name in all_classes if name.lower() in pred]
    # The reference removes from the list it iterates over, which skips the element after each
    # removal; iterate the same way so scores agree exactly.
    for term in matches:
        if term in gold and term != gold:
            matches.remove(term)
    return 1.0 / len(matches) if gold in matches else 0.0


_OPTION_PATTERNS = {
    "piqa": r"A|B",
    "social_i_qa": r"A|B|C",
    "arc_easy": r"A|B|C|D|E|1|2|3|4",
    "arc_challenge": r"A|B|C|D|E|1|2|3|4",
}
_BOILERPLATE = ["According", "Base", "Answer"] + [f"Doc {i}" for i in range(1, 6)] + \
    [f"Document {i}" for i in range(1, 6)]


def extract_option(dataset: str, prediction: str) -> str:
    """First option letter/number in a multiple-choice generation, '' when none.

    Boiler-plate words ('According', 'Answer', 'Doc 3', ...) are removed first so their capitals
    and digits are not taken for options.

    Raises:
        ValueError: for a dataset without options.
    """
    if dataset not in _OPTION_PATTERNS:
        raise ValueError(f"dataset {dataset!r} has no answer options; known: {sorted(_OPTION_PATTERNS)}")
    text = prediction.strip()
    for word in _BOILERPLATE:
        text = text.replace(word, "")
    found = re.findall(_OPTION_PATTERNS[dataset], text)
    return found[0] if found else ""


METRICS: dict[str, Callable[..., float]] = {
    "exact_match": exact_match,
    "qa_f1": qa_f1,
    "rouge_l": rouge_l,
    "classification": classification_score,
}


def best_score(metric: str, prediction: str, answers: Sequence[str],
               all_classes: Sequence[str] | None = None) -> float:
    """Max of metric `metric` over the gold `answers` (0.0 when there are none).

    Raises:
        ValueError: for an unknown metric name.
    """
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; known: {sorted(METRICS)}")
    fn = METRICS[metric]
    return max((fn(prediction, gold, all_classes=all_classes) for gold in answers), default=0.0)
