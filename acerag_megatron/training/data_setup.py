"""--data_files -> preprocessed prefixes -> the mixed, length-filtered dataset.

Raw JSON/JSONL is preprocessed once into a cache keyed by file content, tokenizer and mode;
one rank per node builds it (and checks every prefix against the LM's tokenizer) while the
others wait, then every rank opens the same binaries. A data mistake found by a builder stops
every rank with the same one-line error instead of leaving the others waiting.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch.distributed as dist

from acerag_megatron.data.dataset import CompressiveDataset, SampleConfig
from acerag_megatron.data.preprocess import (DataError, describe_counts, ensure_preprocessed, read_manifest,
                                             tokenizer_hash, tokenizer_name)

LM_FLAG = "--language_model_name_or_path"


def _is_prefix(path: str) -> bool:
    return Path(path + ".bin").is_file() and Path(path + ".idx").is_file()


def default_cache_dir(output_dir: str) -> Path:
    """Inside the run's own folder: a shared parent such as /tmp is writable by everyone."""
    return Path(output_dir).resolve() / "preprocess_cache"


def _check_tokenizer(data_file: str, manifest: dict, lm: str, lm_hash: str) -> None:
    tok = manifest.get("tokenizer", {})
    if tok.get("hash") != lm_hash:
        raise SystemExit(
            f"error: --data_files {data_file}: preprocessed with tokenizer {tok.get('path', '?')} "
            f"(hash {str(tok.get('hash'))[:12]}), but {LM_FLAG} {tokenizer_name(lm)[1]} has tokenizer hash "
            f"{lm_hash[:12]}; preprocess it again with --tokenizer {lm}")


def _prepare(args, tokenizer: str) -> list[str]:
    """Build (if needed) and check every prefix; SystemExit("error: ...") on a mistake."""
    mode = "pretrain" if args.window_mode else "finetune"
    cache = args.preprocess_cache_dir or str(default_cache_dir(args.output_dir))
    for f in args.data_files:
        if not _is_prefix(f) and not Path(f).is_file():
            raise SystemExit(f"error: --data_files {f}: no such file (and no {f}.bin/.idx prefix)")
    try:
        lm_hash = tokenizer_hash(tokenizer)
    except DataError as e:
        raise SystemExit(f"error: {LM_FLAG} {e}") from None
    allow_empty = args.allow_empty_data
    prefixes = []
    for f in args.data_files:
        try:
            prefix = f if _is_prefix(f) else ensure_preprocessed(f, tokenizer, mode, cache, tokenizer_digest=lm_hash,
                                                                  allow_empty=allow_empty)
            manifest = read_manifest(prefix)
        except DataError as e:
            raise SystemExit(f"error: --data_files {e}") from None
        except OSError as e:  # e.g. a cache folder that cannot be written
            raise SystemExit(f"error: --data_files {f}: {e.filename or cache}: {e.strerror or e}") from None
        if manifest["mode"] != mode:
            raise SystemExit(f"error: --data_files {f}: {manifest['mode']} data, but --window_mode "
                             f"{args.window_mode} trains on {mode} data")
        _check_tokenizer(f, manifest, tokenizer, lm_hash)
        if manifest["counts"]["kept"] == 0 and not allow_empty:
            raise SystemExit(f"error: --data_files {f}: no records ({describe_counts(manifest['counts'])}); "
                             "--allow_empty_data accepts it")
        prefixes.append(prefix)
    return prefixes


def resolve_prefixes(args, tokenizer: str) -> list[str]:
    """The preprocessed prefix of every --data_files entry, in order (tokenizer: the LM's folder or hub id)."""
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    outcome: tuple[list[str] | None, str | None] = (None, None)
    if local_rank == 0:
        try:
            outcome = (_prepare(args, tokenizer), None)
        except SystemExit as e:
            outcome = (None, str(e.code))
    if dist.is_initialized():
        # Also the barrier: no rank opens a prefix before its node's builder has written it.
        everyone = [None] * dist.get_world_size()
        dist.all_gather_object(everyone, outcome)
        errors = [error for _, error in everyone if error]
        if errors:
            raise SystemExit(errors[0])
        outcome = everyone[dist.get_rank() - local_rank]  # this node's builder
    if outcome[1]:
        raise SystemExit(outcome[1])
    return outcome[0]


def build_dataset(args, prefixes: list[str]) -> CompressiveDataset:
    config = SampleConfig(
        window_mode=args.window_mode, window=args.window, encoder_max_length=args.encoder_max_length,
        lm_max_length=args.lm_max_length, comp_candidates=list(args.comp_candidates),
        pretraining_down_scaling_method=args.pretraining_down_scaling_method,
        down_scaling_method=args.down_scaling_method, min_length=args.min_length, max_length=args.max_length,
        sort_pretrain_random_indices=args.sort_pretrain_random_indices)
    try:
        return CompressiveDataset(prefixes, config, seed=args.seed, data_splits=args.data_splits or None,
                                  train_num_per_data=args.train_num_per_data)
    except DataError as e:
        raise SystemExit(f"error: --data_files {e}") from None
