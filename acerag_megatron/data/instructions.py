"""Task instructions prepended to encoder chunks and the QA prompt of retrieval records (METHOD.md 4.1-4.2).

Strings follow AceRAG `src/config.py` (`dataset2compression_instruction`, `dataset2prompt`).
"""
from __future__ import annotations

from pathlib import Path

from acerag_megatron import CONTEXT_TAG

INPUT_TAG = "[INPUT_RmehNsY1]"
"""Sentinel for the question / test input inside prompt templates."""

_QA_SENTENCE = ("Answer the question based on the given documents. "
                "Only give me the answer and do not output any other words.")
_QA_INSTRUCTION = _QA_SENTENCE + "\n\nThe following are given documents.\n"
_SUM_INSTRUCTION = "Summarize the given documents.\n"
_ICL_INSTRUCTION = "Compress the few-shot examples, retaining key patterns and diversity while removing redundancy.\n"
_REASONING_INSTRUCTION = ("Compress the context to the core facts and relationships that are pivotal "
                          "for solving the reasoning task.\n")

DATASET_TO_COMPRESSION_INSTRUCTION: dict[str, str] = {
    **{name: _QA_INSTRUCTION for name in ("hotpotqa", "2wikimqa", "musique", "nq", "popqa", "trivia")},
    **{name: _SUM_INSTRUCTION for name in ("multi_news", "gov_report", "billsum")},
    **{name: _ICL_INSTRUCTION for name in ("trec_fine", "banking77", "clinc150")},
    **{name: _REASONING_INSTRUCTION for name in ("arc_easy", "arc_challenge", "piqa", "social_i_qa")},
}
"""Encoder task instruction by dataset name; names not listed (e.g. longalpaca) get none."""

QA_PROMPT_TEMPLATE = (f"{_QA_SENTENCE}\n\nThe following are given documents.\n{CONTEXT_TAG}\n\n"
                      f"{_QA_SENTENCE}\n\nQuestion: {INPUT_TAG}\nAnswer:")
"""Prompt built for retrieval-shape records ({query, key, answers})."""

RETRIEVAL_NUM = 5
"""At most this many retrieved documents form the context."""


def dataset_name(path: str | Path) -> str:
    """Dataset name of a data file: its basename without extensions (`nq.jsonl.gz` -> `nq`)."""
    name = Path(path).name
    for ext in (".gz", ".jsonl", ".json"):
        if name.endswith(ext):
            name = name[: -len(ext)]
    return name


def compression_instruction(name: str) -> str | None:
    """The encoder task instruction of a dataset, or None."""
    return DATASET_TO_COMPRESSION_INSTRUCTION.get(name)


def retrieval_prompt(query: str, docs: list[str]) -> tuple[str, str]:
    """(prompt with CONTEXT_TAG, context) for a retrieval record, as AceRAG's training script builds them."""
    prompt = QA_PROMPT_TEMPLATE.replace(INPUT_TAG, query)
    context = "\n\n".join(f"Doc {i + 1}: {doc}" for i, doc in enumerate(docs[:RETRIEVAL_NUM]))
    return prompt, context
