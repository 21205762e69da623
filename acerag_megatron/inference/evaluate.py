"""AceRAG evaluation: read eval records, build (compressed) prompts, generate greedily, score, write results.

Record shapes (METHOD.md 8.3): LongBench-style `{input, context, answers, all_classes}` and
retrieval-style `{query, key: [docs], answers}` (the first 5 docs form the context).
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from acerag_megatron.data.instructions import compression_instruction, retrieval_prompt
from acerag_megatron.data.records import iter_raw_records
from acerag_megatron.inference.compress import compress_prompt
from acerag_megatron.inference.generate import generate
from acerag_megatron.inference.prompts import eval_prompt
from acerag_megatron.inference.tasks import Task, get_task, score_generation, scored_text
from acerag_megatron.weights.atomic import write_file

CHAT_TEMPLATE_MODES = ("auto", "on", "off")


@dataclass(kw_only=True)
class EvalConfig:
    """One evaluation run."""

    lm: str
    """LM folder or hub id (AutoModelForCausalLM); its tokenizer is used."""
    data: str
    """Eval records, JSON array or JSONL (optionally .gz)."""
    dataset: str
    """Dataset name: selects prompt, encoder instruction, metric and defaults."""
    output: str
    """Predictions JSONL path; the results JSON goes next to it as `<stem>.results.json`."""
    encoder: str | None = None
    """Exported encoder folder (or a checkpoint folder holding `compressive_encoder/`)."""
    comp_ratio: int | None = 8
    """Compression ratio; None = plain RAG (context as tokens)."""
    down_scaling_method: str = "stride"
    """Encoder-state selection: 'stride' (AceRAG's evaluation), 'random' or 'terminal'."""
    max_new_tokens: int | None = None
    """Generation budget; None = the dataset's AceRAG value."""
    batch_size: int = 1
    """Examples per generate call (left padded)."""
    lm_max_length: int | None = None
    """LM budget for truncation; None = 4096 for open-domain QA, 3500 otherwise."""
    encoder_max_length: int = 4096
    """Maximum encoder chunk length E."""
    chat_template: str = "auto"
    """'on', 'off', or 'auto' (off only for few-shot classification with a Llama LM, as AceRAG)."""
    device: str | None = None
    """torch device; None = cuda when available, else cpu."""
    dtype: str | None = None
    """'bfloat16', 'float16' or 'float32'; None = bf16 on GPU, fp32 on CPU."""
    limit: int | None = None
    """Evaluate only the first N records."""
    seed: int = 42
    """Seed of the 'random' selection method."""

    def __post_init__(self) -> None:
        if self.comp_ratio is not None and self.comp_ratio < 1:
            raise ValueError(f"comp_ratio must be >= 1 or none, got {self.comp_ratio}")
        if self.comp_ratio is not None and not self.encoder:
            raise ValueError("--encoder is required unless --comp_ratio none")
        if self.chat_template not in CHAT_TEMPLATE_MODES:
            raise ValueError(f"chat_template must be one of {CHAT_TEMPLATE_MODES}, got {self.chat_template!r}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        get_task(self.dataset)


@dataclass
class EvalExample:
    """One record turned into a prompt, its context and the golds."""

    line: int
    question: str
    prompt: str
    context: str
    answers: list[str]
    all_classes: list[str] | None


def _str_list(value, where: str, name: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{where}: field '{name}' must be a list of strings")
    return value


def _field(record: dict, name: str, where: str) -> str:
    if not isinstance(record.get(name), str):
        raise ValueError(f"{where}: field '{name}' missing or not a string")
    return record[name]


def parse_example(record, task: Task, where: str) -> EvalExample:
    """Turn one eval record into an `EvalExample`; `where` ('file:line') prefixes every error."""
    if not isinstance(record, dict):
        raise ValueError(f"{where}: record is not a JSON object")
    answers = _str_list(record.get("answers"), where, "answers")
    classes = record.get("all_classes")
    if classes is not None:
        classes = _str_list(classes, where, "all_classes")
    if task.metric == "classification" and not classes:
        raise ValueError(f"{where}: field 'all_classes' is required for {task.name}")
    line = int(where.rsplit(":", 1)[-1])
    if "key" in record:
        question = _field(record, "query", where)
        context = retrieval_prompt(question, _str_list(record["key"], where, "key"))[1]
    else:
        question, context = _field(record, "input", where), _field(record, "context", where)
    return EvalExample(line, question, eval_prompt(task.name, question), context, answers, classes)


def load_examples(path: str, task: Task, limit: int | None = None) -> list[EvalExample]:
    """All (or the first `limit`) examples of an eval file.

    Raises:
        ValueError: on malformed JSON or a bad field, naming file, line and field.
    """
    examples = []
    for raw in iter_raw_records(path):
        if limit is not None and len(examples) >= limit:
            break
        where = f"{path}:{raw.line}"
        if raw.error:
            raise ValueError(f"{where}: {raw.error}")
        examples.append(parse_example(raw.value, task, where))
    if not examples:
        raise ValueError(f"{path}: no eval records")
    return examples


def use_chat_template(mode: str, task: Task, lm_model_type: str) -> bool:
    """Resolve the chat-template switch ('auto' follows AceRAG: Llama LMs skip it for few-shot ICL)."""
    if mode != "auto":
        return mode == "on"
    return not (task.icl and lm_model_type == "llama")


def results_path(output: str | Path) -> Path:
    """Where the results JSON of a predictions file goes."""
    return Path(output).with_suffix(".results.json")


def _load(cfg: EvalConfig):
    import torch

    from acerag_megatron.inference.loading import load_encoder, load_lm, load_tokenizer

    device = cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = getattr(torch, cfg.dtype) if cfg.dtype else None
    tok = load_tokenizer(cfg.lm)
    lm = load_lm(cfg.lm, device, dtype)
    enc = load_encoder(cfg.encoder, device, dtype) if cfg.comp_ratio is not None else None
    return tok, lm, enc


def run_evaluation(cfg: EvalConfig, progress: bool = True) -> dict:
    """Evaluate one dataset; writes predictions JSONL and results JSON atomically; returns the results."""
    from tqdm import tqdm

    task = get_task(cfg.dataset)
    examples = load_examples(cfg.data, task, cfg.limit)
    tok, lm, enc = _load(cfg)
    chat = use_chat_template(cfg.chat_template, task, lm.config.model_type)
    max_new = cfg.max_new_tokens or task.max_new_tokens
    lm_max = cfg.lm_max_length or task.lm_max_length
    instruction = compression_instruction(task.name)
    rng = np.random.default_rng(cfg.seed)
    rows, lengths, placeholders = [], [], []
    start = time.perf_counter()
    bar = tqdm(total=len(examples), desc=f"eval {task.name}", disable=not progress, unit="ex")
    for i in range(0, len(examples), cfg.batch_size):
        batch = examples[i:i + cfg.batch_size]
        prompts = [compress_prompt(tok, ex.prompt, ex.context, ratio=cfg.comp_ratio, lm_max_length=lm_max,
                                   encoder_max_length=cfg.encoder_max_length, instruction=instruction,
                                   method=cfg.down_scaling_method, apply_chat_template=chat, rng=rng)
                   for ex in batch]
        outputs = generate(lm, enc, prompts, pad_token_id=tok.pad_token_id, max_new_tokens=max_new)
        for ex, prompt, text in zip(batch, prompts, tok.batch_decode(outputs, skip_special_tokens=True)):
            score = score_generation(task, text, ex.answers, ex.all_classes)
            rows.append({"index": len(rows), "line": ex.line, "question": ex.question, "prediction": text,
                         "scored": scored_text(task, text), "answers": ex.answers, "score": score})
            lengths.append(len(prompt.input_ids))
            placeholders.append(len(prompt.placeholder_positions))
        bar.update(len(batch))
    bar.close()
    elapsed = time.perf_counter() - start
    results = {
        "dataset": task.name, "metric": task.metric, "score": float(np.mean([r["score"] for r in rows])),
        "num_examples": len(rows), "comp_ratio": cfg.comp_ratio, "chat_template": chat,
        "max_new_tokens": max_new, "lm_max_length": lm_max, "mean_lm_input_length": float(np.mean(lengths)),
        "mean_placeholders": float(np.mean(placeholders)), "elapsed_s": round(elapsed, 3),
        "config": asdict(cfg),
    }
    out = Path(cfg.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_file(out, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    write_file(results_path(out), json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    return results


def format_table(results: dict) -> str:
    """A one-row summary table of a results dict."""
    cols = [("dataset", results["dataset"]), ("metric", results["metric"]),
            ("score", f"{100 * results['score']:.2f}"), ("n", results["num_examples"]),
            ("ratio", results["comp_ratio"] or "none"), ("lm_len", f"{results['mean_lm_input_length']:.1f}"),
            ("seconds", results["elapsed_s"])]
    widths = [max(len(k), len(str(v))) for k, v in cols]
    head = "  ".join(k.ljust(w) for (k, _), w in zip(cols, widths))
    row = "  ".join(str(v).ljust(w) for (_, v), w in zip(cols, widths))
    return f"{head}\n{row}"
