"""Decode a built training sample back to text with roles, placeholders and targets marked.

    python tools/inspect_data.py out/nq --index 3 --ratio 4
    python tools/inspect_data.py out/redpajama --window 1024 --mode tokens
"""
from __future__ import annotations

import argparse
import sys

from acerag_megatron.cli.spellings import ToolParser
from acerag_megatron.data.chat import load_tokenizer
from acerag_megatron.data.dataset import CompressiveDataset, SampleConfig
from acerag_megatron.data.inspect import describe_sample
from acerag_megatron.data.preprocess import DataError, read_manifest


def main(argv: list[str] | None = None) -> int:
    """Parse the flags, build one sample and print it; returns the exit status."""
    p = ToolParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("prefix", help="preprocessed prefix (<prefix>.bin/.idx/.json)")
    p.add_argument("--index", type=int, default=0)
    p.add_argument("--epoch", type=int, default=0)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--mode", choices=["text", "tokens"], default="text", help="decoded text or token pieces")
    p.add_argument("--ratio", type=int, default=None, help="fine-tuning ratio instead of the drawn one")
    p.add_argument("--tokenizer", default=None, help="tokenizer folder (default: the one recorded at preprocessing)")
    p.add_argument("--window", type=int, default=1024)
    p.add_argument("--encoder-max-length", type=int, default=4096)
    p.add_argument("--lm-max-length", type=int, default=4096)
    p.add_argument("--comp-candidates", type=int, nargs="+", default=[1, 2, 4, 8])
    p.add_argument("--method", default="stride", help="down-scaling method")
    p.add_argument("--limit", type=int, default=400, help="tokens shown per part")
    args = p.parse_args(argv)
    try:
        manifest = read_manifest(args.prefix)
        window_mode = manifest["mode"] == "pretrain"
        config = SampleConfig(window_mode=window_mode, window=args.window, encoder_max_length=args.encoder_max_length,
                              lm_max_length=args.lm_max_length, comp_candidates=tuple(args.comp_candidates),
                              pretraining_down_scaling_method=args.method if window_mode else "stride",
                              down_scaling_method=args.method)
        dataset = CompressiveDataset([args.prefix], config, seed=args.seed)
        tok_dir = args.tokenizer or manifest["tokenizer"].get("path")
        if not tok_dir:
            raise DataError(f"{args.prefix}.json records no tokenizer path; pass --tokenizer")
        tok = load_tokenizer(tok_dir, add_context_tag=not window_mode)
        sample = dataset.get(args.index, args.epoch, ratio=None if window_mode else args.ratio)
    except (DataError, ValueError, IndexError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    name, doc = dataset.source(args.index)
    print(f"== {name} sample {args.index} (document {doc}), epoch {args.epoch}, seed {args.seed}")
    print(describe_sample(tok, sample, args.mode, args.limit))
    return 0


if __name__ == "__main__":
    sys.exit(main())
