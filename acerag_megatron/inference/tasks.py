"""Evaluation tasks: per-dataset metric, generation length, record shape and answer post-processing.

The table reproduces AceRAG's evaluation configuration (LMQA, ODQA, SUM, ICL, Reasoning groups).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from acerag_megatron.inference.metrics import best_score, extract_option


@dataclass(frozen=True)
class Task:
    """How one evaluation dataset is prompted and scored."""

    name: str
    """Dataset name (the eval file's basename)."""
    metric: str
    """Key of `acerag_megatron.inference.metrics.METRICS`."""
    max_new_tokens: int
    """Greedy generation budget."""
    retrieval: bool
    """Records carry `query` + `key` (retrieved docs) instead of `input` + `context`."""
    options: bool = False
    """Extract the option letter/number from the generation before scoring."""
    icl: bool = False
    """Few-shot classification; AceRAG renders these without the chat template for Llama-2."""
    lm_max_length: int = 3500
    """Default LM budget of AceRAG's scripts (4096 for open-domain QA, 3500 elsewhere)."""


_GROUPS = [
    (("hotpotqa", "2wikimqa", "musique"), dict(metric="qa_f1", max_new_tokens=32, retrieval=False)),
    (("nq", "popqa", "trivia"), dict(metric="exact_match", max_new_tokens=128, retrieval=True, lm_max_length=4096)),
    (("multi_news", "gov_report", "billsum"), dict(metric="rouge_l", max_new_tokens=512, retrieval=False)),
    (("trec_fine", "banking77", "clinc150"),
     dict(metric="classification", max_new_tokens=64, retrieval=False, icl=True)),
    (("arc_challenge", "piqa", "social_i_qa"),
     dict(metric="exact_match", max_new_tokens=128, retrieval=True, options=True)),
]

TASKS: dict[str, Task] = {name: Task(name=name, **spec) for names, spec in _GROUPS for name in names}


def get_task(name: str) -> Task:
    """The `Task` for a dataset name.

    Raises:
        ValueError: for a dataset AceRAG does not evaluate.
    """
    if name not in TASKS:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(sorted(TASKS))}")
    return TASKS[name]


def scored_text(task: Task, generation: str) -> str:
    """The part of a generation that is scored: option extraction (reasoning), then the first line."""
    text = extract_option(task.name, generation) if task.options else generation
    return text.split("\n")[0]


def score_generation(task: Task, generation: str, answers: Sequence[str],
                     all_classes: Sequence[str] | None = None) -> float:
    """Score one decoded generation against its gold answers (max over golds)."""
    return best_score(task.metric, scored_text(task, generation), answers, all_classes)
