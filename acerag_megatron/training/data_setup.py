"""--data_files -> preprocessed prefixes -> the mixed, length-filtered dataset.

Raw JSON/JSONL is preprocessed once into a cache keyed by file content, tokenizer and mode;
one rank per node builds it while the others wait, then every rank opens the same binaries.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch.distributed as dist

from acerag_megatron.data.dataset import CompressiveDataset, SampleConfig
from acerag_megatron.data.preprocess import ensure_preprocessed


def _is_prefix(path: str) -> bool:
    return Path(path + ".bin").is_file() and Path(path + ".idx").is_file()


def resolve_prefixes(args, tokenizer_dir: str) -> list[str]:
    mode = "pretrain" if args.window_mode else "finetune"
    cache = args.preprocess_cache_dir or str(Path(args.output_dir).resolve().parent / ".preprocess_cache")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    raw = [f for f in args.data_files if not _is_prefix(f)]
    for f in raw:
        if not Path(f).is_file():
            raise SystemExit(f"error: --data_files {f}: no such file (and no {f}.bin/.idx prefix)")
    prefixes: list[str] = []
    # Node-local builders first, then everyone resolves the (now cached) prefixes.
    for phase in ("build", "open"):
        if phase == "open" and dist.is_initialized():
            dist.barrier()
        if phase == "build" and local_rank != 0:
            continue
        prefixes = [f if _is_prefix(f) else str(ensure_preprocessed(f, tokenizer_dir, mode, cache))
                    for f in args.data_files]
    return prefixes


def build_dataset(args, prefixes: list[str]) -> CompressiveDataset:
    config = SampleConfig(
        window_mode=args.window_mode, window=args.window, encoder_max_length=args.encoder_max_length,
        lm_max_length=args.lm_max_length, comp_candidates=list(args.comp_candidates),
        pretraining_down_scaling_method=args.pretraining_down_scaling_method,
        down_scaling_method=args.down_scaling_method, min_length=args.min_length, max_length=args.max_length,
        sort_pretrain_random_indices=args.sort_pretrain_random_indices)
    return CompressiveDataset(prefixes, config, seed=args.seed, data_splits=args.data_splits or None,
                              train_num_per_data=args.train_num_per_data)
