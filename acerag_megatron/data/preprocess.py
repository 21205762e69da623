"""Raw JSON/JSONL records -> Megatron indexed binaries `<prefix>.bin/.idx` plus a `<prefix>.json` manifest.

Document layout: pretrain = one sequence (the tokenized text); finetune = four sequences
`head, context, tail_prompt, tail_answer` (targets are exactly the tail_answer tokens).
Ratios, truncation and index selection happen at load time, never here.
"""
from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import sys
from collections import Counter
from itertools import islice
from pathlib import Path
from typing import Iterator

import numpy as np

from acerag_megatron.data.chat import encode_conversation, encode_text, load_tokenizer
from acerag_megatron.data.instructions import compression_instruction, dataset_name
from acerag_megatron.data.records import (RawRecord, RecordError, iter_raw_records, parse_finetune_record,
                                          parse_pretrain_record)

FORMAT_VERSION = 1
MODES = ("pretrain", "finetune")
SEQUENCES_PER_DOCUMENT = {"pretrain": 1, "finetune": 4}
MAX_REPORTED_ERRORS = 5
BATCH_SIZE = 64


class DataError(Exception):
    """A fatal problem with the input: missing file, unreadable tokenizer, or a bad record under --strict."""


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def tokenizer_hash(tokenizer_dir: str | Path) -> str:
    """Hex SHA-256 over the names and bytes of the files of a tokenizer folder."""
    h = hashlib.sha256()
    for p in sorted(Path(tokenizer_dir).iterdir()):
        if p.is_file():
            h.update(p.name.encode() + b"\0")
            h.update(p.read_bytes())
    return h.hexdigest()


_WORKER: dict = {}


def _init_worker(tokenizer_dir: str, mode: str) -> None:
    _WORKER["tokenizer"] = load_tokenizer(tokenizer_dir, add_context_tag=(mode == "finetune"))
    _WORKER["mode"] = mode


def _encode_one(record: RawRecord) -> list[list[int]]:
    if record.error is not None:
        raise RecordError("malformed_json", record.error)
    tok = _WORKER["tokenizer"]
    if _WORKER["mode"] == "pretrain":
        return [encode_text(tok, parse_pretrain_record(record.value))]
    prompt, context, answer = parse_finetune_record(record.value)
    try:
        conv = encode_conversation(tok, prompt, context, answer)
    except AssertionError as e:
        raise RecordError("template_prefix", str(e)) from e
    split = conv.tail_label_start
    return [conv.head, conv.context, conv.tail[:split], conv.tail[split:]]


def _encode_batch(batch: list[RawRecord]) -> list[tuple[int, list[list[int]] | None, str, str]]:
    """Encode records; each result is (line, sequences or None, drop reason, message)."""
    out = []
    for record in batch:
        try:
            out.append((record.line, _encode_one(record), "", ""))
        except RecordError as e:
            out.append((record.line, None, e.reason, str(e)))
    return out


def _batches(path: Path) -> Iterator[list[RawRecord]]:
    records = iter_raw_records(path)
    while batch := list(islice(records, BATCH_SIZE)):
        yield batch


def _encoded(path: Path, tokenizer_dir: str, mode: str, workers: int):
    """Encoded batches in file order; at most a few batches per worker are in flight (bounded memory)."""
    if workers <= 1:
        _init_worker(tokenizer_dir, mode)
        for batch in _batches(path):
            yield _encode_batch(batch)
        return
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    with multiprocessing.get_context("fork").Pool(workers, _init_worker, (tokenizer_dir, mode)) as pool:
        source = _batches(path)
        while window := list(islice(source, 4 * workers)):
            yield from pool.map(_encode_batch, window)


def _progress(enabled: bool, name: str):
    try:
        from tqdm import tqdm
        return tqdm(desc=f"preprocess {name}", unit="rec", disable=not enabled, file=sys.stderr)
    except ImportError:
        return _LineProgress(enabled, name)


class _LineProgress:
    """Minimal stand-in for tqdm: one updating stderr line."""

    def __init__(self, enabled: bool, name: str):
        self.enabled, self.name, self.n = enabled, name, 0

    def update(self, k: int) -> None:
        self.n += k
        if self.enabled:
            print(f"\rpreprocess {self.name}: {self.n} records", end="", file=sys.stderr)

    def close(self) -> None:
        if self.enabled:
            print(file=sys.stderr)


def _tokenizer_meta(tok, tokenizer_dir: str) -> dict:
    pad = tok.pad_token_id if tok.pad_token_id else tok.eos_token_id  # as the reference: falsy pad -> eos
    return {"name": Path(tokenizer_dir).resolve().name, "path": str(Path(tokenizer_dir).resolve()), "class": type(tok).__name__, "vocab_size": len(tok),
            "hash": tokenizer_hash(tokenizer_dir), "bos_id": tok.bos_token_id, "eos_id": tok.eos_token_id,
            "pad_id": pad}


def check_inputs(inputs: list[str | Path], tokenizer_dir: str | Path, mode: str):
    """Fail early, before anything is written, on a bad mode, a missing input or an unreadable tokenizer."""
    if mode not in MODES:
        raise DataError(f"unknown mode {mode!r}; expected one of {MODES}")
    for path in inputs:
        if not Path(path).is_file():
            raise DataError(f"{path}: no such input file")
    try:
        return load_tokenizer(str(tokenizer_dir), add_context_tag=(mode == "finetune"))
    except ValueError as e:
        raise DataError(str(e)) from e


def preprocess_file(input_path: str | Path, tokenizer_dir: str | Path, output_prefix: str | Path, mode: str, *,
                    workers: int = 1, strict: bool = False, progress: bool = True) -> dict:
    """Tokenize one raw file into `<output_prefix>.bin/.idx/.json`, written atomically.

    Bad records are skipped and counted by reason (the first few are printed with file:line);
    with `strict` the first one raises DataError and nothing is written.

    Returns:
        The manifest written to `<output_prefix>.json`.
    """
    from megatron.core.datasets.indexed_dataset import DType, IndexedDatasetBuilder

    input_path, output_prefix = Path(input_path), Path(output_prefix)
    tok = check_inputs([input_path], tokenizer_dir, mode)
    name = dataset_name(input_path)
    instruction = compression_instruction(name) if mode == "finetune" else None
    instruction_ids = list(tok(instruction, add_special_tokens=False)["input_ids"]) if instruction else []
    dtype = DType.optimal_dtype(len(tok))
    output_prefix.parent.mkdir(parents=True, exist_ok=True)
    tmp = output_prefix.parent / f".{output_prefix.name}.tmp{os.getpid()}"
    tmp_paths = [Path(f"{tmp}.bin"), Path(f"{tmp}.idx"), Path(f"{tmp}.json")]
    read, kept, dropped = 0, 0, Counter()
    bar = _progress(progress, name)
    try:
        builder = IndexedDatasetBuilder(str(tmp_paths[0]), dtype=dtype)
        for results in _encoded(input_path, str(tokenizer_dir), mode, workers):
            for line, sequences, reason, message in results:
                read += 1
                if sequences is None:
                    dropped[reason] += 1
                    if strict:
                        raise DataError(f"{input_path}:{line}: {message}")
                    if sum(dropped.values()) <= MAX_REPORTED_ERRORS:
                        print(f"{input_path}:{line}: skipped: {message}", file=sys.stderr)
                    continue
                kept += 1
                flat = np.concatenate([np.asarray(s, dtype=np.int64) for s in sequences])
                builder.add_document(flat, [len(s) for s in sequences])  # numpy avoids a torch __array__ copy warning
            bar.update(len(results))
        builder.finalize(str(tmp_paths[1]))
        manifest = {
            "format_version": FORMAT_VERSION, "mode": mode, "dataset_name": name, "source_file": input_path.name,
            "source_sha256": file_sha256(input_path), "tokenizer": _tokenizer_meta(tok, str(tokenizer_dir)),
            "dtype": np.dtype(dtype).name, "sequences_per_document": SEQUENCES_PER_DOCUMENT[mode],
            "instruction": instruction, "instruction_ids": instruction_ids,
            "flags": {"strict": strict, "workers": workers, "add_context_tag": mode == "finetune"},
            "counts": {"read": read, "kept": kept, "dropped": dict(sorted(dropped.items()))},
        }
        tmp_paths[2].write_text(json.dumps(manifest, indent=2))
        # The manifest is renamed last: a prefix counts as complete only once its .json exists.
        final = [Path(f"{output_prefix}{ext}") for ext in (".bin", ".idx", ".json")]
        final[2].unlink(missing_ok=True)
        for src, dst in zip(tmp_paths, final):
            os.replace(src, dst)
        return manifest
    finally:
        bar.close()
        for p in tmp_paths:
            p.unlink(missing_ok=True)


def output_prefixes(inputs: list[str | Path], output_prefix: str | Path) -> list[Path]:
    """One input -> the prefix itself; several -> `<output_prefix>/<dataset name>` each."""
    if len(inputs) == 1:
        return [Path(output_prefix)]
    names = [dataset_name(p) for p in inputs]
    if len(set(names)) != len(names):
        raise DataError(f"input files share a dataset name: {names}")
    return [Path(output_prefix) / n for n in names]


def preprocess_files(inputs: list[str | Path], tokenizer_dir: str | Path, output_prefix: str | Path, mode: str, *,
                     workers: int = 1, strict: bool = False, progress: bool = True) -> list[Path]:
    """Preprocess several files (all inputs and the tokenizer are checked before anything is written)."""
    prefixes = output_prefixes(inputs, output_prefix)
    check_inputs(inputs, tokenizer_dir, mode)
    for path, prefix in zip(inputs, prefixes):
        manifest = preprocess_file(path, tokenizer_dir, prefix, mode, workers=workers, strict=strict,
                                   progress=progress)
        c = manifest["counts"]
        print(f"{path}: read {c['read']}, kept {c['kept']}, dropped {c['dropped']} -> {prefix}", file=sys.stderr)
    return prefixes


def ensure_preprocessed(input_path: str | Path, tokenizer_dir: str | Path, mode: str, cache_dir: str | Path) -> str:
    """Prefix of the preprocessed binaries of a raw file, building them in `cache_dir` if needed.

    The cache key is (file content hash, tokenizer hash, mode, format version); the prefix keeps the
    dataset name as its basename so the task instruction still resolves.
    """
    check_inputs([input_path], tokenizer_dir, mode)
    key = hashlib.sha256(
        f"{file_sha256(input_path)}|{tokenizer_hash(tokenizer_dir)}|{mode}|{FORMAT_VERSION}".encode()).hexdigest()
    prefix = Path(cache_dir) / key[:24] / dataset_name(input_path)
    if not Path(f"{prefix}.json").is_file():
        preprocess_file(input_path, tokenizer_dir, prefix, mode, progress=False)
    return str(prefix)


def read_manifest(prefix: str | Path) -> dict:
    """The `<prefix>.json` manifest, checked for format version.

    Raises:
        DataError: missing manifest or another format version.
    """
    path = Path(f"{prefix}.json")
    if not path.is_file():
        raise DataError(f"{path}: no manifest; preprocess the data first (tools/preprocess_data.py)")
    manifest = json.loads(path.read_text())
    if manifest.get("format_version") != FORMAT_VERSION:
        raise DataError(f"{path}: format_version {manifest.get('format_version')} != {FORMAT_VERSION}; "
                        "preprocess the data again")
    return manifest
