"""Small, deterministic, realistic-looking training records for the seed's ten data files.

Shapes follow METHOD.md 3.1 (pretraining `text`) and 4.1 (retrieval and conversation records), so
the quickstart and the tests run the same preprocessing as the real AceRAG files.
"""
from __future__ import annotations

import json
import os
import random
import zlib
from pathlib import Path

from acerag_megatron import CONTEXT_TAG
from acerag_megatron.weights.atomic import write_file

SEED_FILES = ("redpajama", "longalpaca", "hotpotqa", "nq", "multi_news", "gov_report", "trec_fine",
              "banking77", "arc_easy", "arc_challenge")

_SUBJECTS = ["the committee", "a small river town", "the research team", "the new library", "the city council",
             "an old lighthouse", "the energy agency", "a local school", "the museum", "the rail company"]
_VERBS = ["reported", "announced", "reviewed", "measured", "described", "approved", "questioned", "studied"]
_OBJECTS = ["the annual budget", "a drop in traffic", "the water quality", "new safety rules", "the harvest",
            "rising costs", "the election results", "a rare bird", "the bridge repairs", "public health data"]
_TAILS = ["after a long debate.", "in the spring of 1998.", "for the third time.", "with mixed results.",
          "despite strong objections.", "ahead of schedule.", "at a press conference.", "in great detail."]
_TREC_LABELS = ["description of something", "an individual", "cities", "dates", "number of something"]
_BANK_LABELS = ["card_arrival", "exchange_rate", "lost_or_stolen_card", "top_up_failed", "transfer_timing"]


def _sentence(rng: random.Random) -> str:
    s = f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)} {rng.choice(_TAILS)}"
    return s[0].upper() + s[1:]


def _paragraph(rng: random.Random, num_words: int) -> str:
    out, words = [], 0
    while words < num_words:
        s = _sentence(rng)
        out.append(s)
        words += len(s.split())
    return " ".join(out)


def _conversation(prompt: str, context: str, answer: str) -> dict:
    user = {"role": "user", "content": prompt.replace(CONTEXT_TAG, context), "prompt": prompt, "context": context}
    return {"conversations": [user, {"role": "assistant", "content": answer}]}


def _retrieval(rng: random.Random, words: int) -> dict:
    subject = rng.choice(_SUBJECTS)
    docs = [_paragraph(rng, max(words // 5, 8)) for _ in range(rng.randint(5, 7))]
    return {"query": f"What did {subject} report?", "key": docs, "answers": [rng.choice(_OBJECTS)]}


def _icl(rng: random.Random, words: int, labels: list[str]) -> dict:
    demos, count = [], 0
    while count < words:
        text = _sentence(rng)
        demos.append(f"{text}\nlabel: {rng.choice(labels)}")
        count += len(text.split()) + 2
    prompt = ("Use the provided mapping from the text to label to assign a label to the text. Only output "
              f"\"label: {{label}}\" and nothing else. All labels are: {', '.join(labels)}.\n\n"
              f"{CONTEXT_TAG}\n{_sentence(rng)}\nlabel:")
    return _conversation(prompt, "\n\n".join(demos), f"label: {rng.choice(labels)}")


def make_record(name: str, rng: random.Random, words: int) -> dict:
    """One record of the named seed file with about `words` words of text/context."""
    if name == "redpajama":
        return {"text": _paragraph(rng, words), "meta": {"source": "tiny"}}
    if name == "longalpaca":
        prompt = ("Below is a paper. Memorize the paper and answer my question after the paper.\n"
                  f"The paper begins.\n{CONTEXT_TAG}\nNow the paper ends.\nWhat does the paper study?")
        return _conversation(prompt, _paragraph(rng, words), _paragraph(rng, 20))
    if name in ("hotpotqa", "nq", "arc_challenge"):
        return _retrieval(rng, words)
    if name == "multi_news":
        prompt = ("You are given several news passages. Write a one-page summary of all news. \n\nNews:\n"
                  f"{CONTEXT_TAG}\n\nNow, write a one-page summary of all the news.\n\nSummary:")
        return _conversation(prompt, _paragraph(rng, words), _paragraph(rng, 40))
    if name == "gov_report":
        prompt = ("You are given a report by a government agency. Write a one-page summary of the report.\n\n"
                  f"Report:\n{CONTEXT_TAG}\n\nNow, write a one-page summary of the report.\n\nSummary:")
        return _conversation(prompt, _paragraph(rng, words), _paragraph(rng, 40))
    if name == "trec_fine":
        return _icl(rng, words, _TREC_LABELS)
    if name == "banking77":
        return _icl(rng, words, _BANK_LABELS)
    if name == "arc_easy":
        prompt = ("Answer the question based on the given documents. Only give me the answer and do not output "
                  f"any other words.\n\nThe following are given documents.\n{CONTEXT_TAG}\n\nQuestion: Which "
                  "is measured?\nA. the harvest\nB. the budget\nC. the traffic\nD. the bridge\n"
                  "Therefore, among A through D or 1 through 4, the answer is")
        return _conversation(prompt, _paragraph(rng, words), rng.choice("ABCD"))
    raise ValueError(f"unknown seed file {name!r}; expected one of {SEED_FILES}")


def make_records(name: str, n: int, seed: int, words: int = 200) -> list[dict]:
    """`n` records of the named file, deterministic in (name, seed)."""
    rng = random.Random(zlib.crc32(name.encode()) ^ seed)
    return [make_record(name, rng, words) for _ in range(n)]


def write_seed_corpus(out_dir: str | os.PathLike, n_per_file: int, seed: int, words: int = 200) -> dict[str, Path]:
    """Write the ten seed files `<name>.json` (redpajama as JSON lines, the rest as JSON arrays).

    The tiny tokenizers give about 4-6 tokens per word, so `words=300` yields 1300-1700-token
    documents: enough for the seed's `--min_length 1024` filter.

    Returns:
        Mapping from dataset name to file path.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name in SEED_FILES:
        records = make_records(name, n_per_file, seed, words)
        if name == "redpajama":
            text = "".join(json.dumps(r) + "\n" for r in records)
        else:
            text = json.dumps(records, indent=1)
        path = out / f"{name}.json"
        write_file(path, text)
        paths[name] = path
    return paths
