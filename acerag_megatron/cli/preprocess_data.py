"""Tokenize raw AceRAG training files into Megatron indexed binaries.

    python tools/preprocess_data.py --input data/nq.json --tokenizer TOKDIR --output-prefix out/nq --mode finetune
    python tools/preprocess_data.py --input a.json b.json --tokenizer TOKDIR --output-prefix out/ --mode finetune
"""
from __future__ import annotations

import argparse
import sys

from acerag_megatron.cli.spellings import ToolParser
from acerag_megatron.data.preprocess import DataError, preprocess_files


def main(argv: list[str] | None = None) -> int:
    """Parse the flags and run preprocessing; returns the exit status."""
    p = ToolParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", nargs="+", required=True, help="raw JSON / JSONL files (optionally .gz)")
    p.add_argument("--tokenizer", required=True, help="the language model's HF folder or hub id (its tokenizer)")
    p.add_argument("--output-prefix", required=True,
                   help="output prefix (one input) or folder receiving <name>.bin/.idx/.json (several inputs)")
    p.add_argument("--mode", choices=["pretrain", "finetune"], required=True)
    p.add_argument("--workers", type=int, default=1, help="tokenizer processes")
    p.add_argument("--strict", action="store_true", help="stop at the first bad record")
    p.add_argument("--allow-empty", action="store_true",
                   help="write a file with no usable record as an empty dataset instead of stopping")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    try:
        preprocess_files(args.input, args.tokenizer, args.output_prefix, args.mode, workers=args.workers,
                         strict=args.strict, progress=not args.no_progress, allow_empty=args.allow_empty)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # e.g. an output folder that cannot be created or written
        print(f"error: {e.filename or args.output_prefix}: {e.strerror or e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
