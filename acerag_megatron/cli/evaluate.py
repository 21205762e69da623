"""Evaluate an LM + exported compressive encoder on one AceRAG eval file (uniform compression).

    python tools/evaluate.py --lm meta-llama/Llama-2-7b-chat-hf --encoder out/checkpoint-1250 \
        --data eval/nq.json --dataset nq --comp_ratio 8 --batch_size 8 --output results/nq.jsonl

Writes per-example predictions (JSONL) to --output and `<stem>.results.json` beside it.
"""
from __future__ import annotations

import argparse
import os
import sys

from acerag_megatron.cli.spellings import ToolParser
from acerag_megatron.inference.evaluate import (
    CHAT_TEMPLATE_MODES, EvalConfig, format_table, results_path, run_evaluation)


def ratio(text: str) -> int | None:
    """`none` (plain RAG) or a positive integer."""
    if text.lower() == "none":
        return None
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"compression ratio must be >= 1 or 'none', got {text}")
    return value


def parse_args(argv: list[str] | None = None) -> tuple[EvalConfig, bool]:
    """Command line -> (EvalConfig, show progress bar)."""
    p = ToolParser(description=__doc__.split("\n")[0])
    p.add_argument("--lm", required=True, help="LM folder or hub id (its tokenizer is used)")
    p.add_argument("--encoder", help="exported encoder folder or checkpoint folder with compressive_encoder/")
    p.add_argument("--data", required=True, help="eval records (JSON array or JSONL, optionally .gz)")
    p.add_argument("--dataset", required=True, help="dataset name: prompt, instruction, metric, defaults")
    p.add_argument("--comp_ratio", type=ratio, default=8, help="compression ratio, or 'none' for plain RAG")
    p.add_argument("--down_scaling_method", default="stride", choices=["stride", "random", "terminal"])
    p.add_argument("--max_new_tokens", type=int, help="default: the dataset's AceRAG value")
    p.add_argument("--batch_size", type=int, default=1)
    p.add_argument("--lm_max_length", type=int, help="default: 4096 for open-domain QA, 3500 otherwise")
    p.add_argument("--encoder_max_length", type=int, default=4096)
    p.add_argument("--chat_template", default="auto", choices=CHAT_TEMPLATE_MODES,
                   help="auto: off only for few-shot classification with a Llama LM")
    p.add_argument("--device", help="default: cuda when available, else cpu")
    p.add_argument("--dtype", choices=["bfloat16", "float16", "float32"], help="default: bf16 on GPU, fp32 on CPU")
    p.add_argument("--limit", type=int, help="evaluate only the first N records")
    p.add_argument("--seed", type=int, default=42, help="seed of the 'random' selection method")
    p.add_argument("--output", required=True, help="predictions JSONL path")
    p.add_argument("--no_progress", action="store_true", help="hide the progress bar")
    args = vars(p.parse_args(argv))
    no_progress = args.pop("no_progress")
    try:
        cfg = EvalConfig(**args)
    except ValueError as e:
        p.error(str(e))
    return cfg, not no_progress


def main(argv: list[str] | None = None) -> int:
    cfg, progress = parse_args(argv)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        if cfg.comp_ratio is not None and cfg.encoder:
            from acerag_megatron.inference.loading import check_encoder_matches_lm

            check_encoder_matches_lm(cfg.lm, cfg.encoder)  # before loading either model's weights
        results = run_evaluation(cfg, progress=progress)
    except (ValueError, OSError) as e:
        text = str(e).strip() or type(e).__name__
        print(f"error: {text.splitlines()[0]}", file=sys.stderr)  # hub errors run to several lines
        return 2
    print(format_table(results))
    print(f"predictions: {cfg.output}\nresults: {results_path(cfg.output)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
