"""Raw JSON/JSONL records -> Megatron indexed binaries `<prefix>.bin/.idx` plus a `<prefix>.json` manifest.

Document layout: pretrain = one sequence (the tokenized text); finetune = four sequences
`head, context, tail_prompt, tail_answer` (targets are exactly the tail_answer tokens).
Ratios, truncation and index selection happen at load time, never here.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import multiprocessing
import os
import sys
from collections import Counter, deque
from pathlib import Path
from typing import Iterator

import numpy as np
from tqdm import tqdm

from acerag_megatron.data.chat import load_tokenizer
from acerag_megatron.data.encoding import SEQUENCES_PER_DOCUMENT, ChunkEncoder, EncodedChunk
from acerag_megatron.data.indexed_writer import IndexedWriter, optimal_dtype
from acerag_megatron.data.instructions import compression_instruction, dataset_name
from acerag_megatron.data.records import iter_record_chunks
from acerag_megatron.data import tokenizer_files
from acerag_megatron.weights.atomic import move_into_place, temp_path, write_file

# 2: the tokenizer hash covers the tokenizer's own files only (1 hashed the whole model folder).
FORMAT_VERSION = 2
MODES = ("pretrain", "finetune")
MAX_REPORTED_ERRORS = 5
# Records per chunk (one batched tokenizer call each); a chunk of JSONL also stops at about CHUNK_CHARS.
CHUNK_RECORDS = 256
CHUNK_CHARS = 1 << 18
# Chunks in flight per worker: enough to keep every worker busy while the main process reads
# and writes, few enough to bound memory.
PREFETCH_PER_WORKER = 2


class DataError(Exception):
    """A fatal problem with the input: missing file, unreadable tokenizer, a bad record under --strict,
    or nothing left to write."""


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def tokenizer_hash(tokenizer: str | Path) -> str:
    """Hash of the tokenizer's own files (folder or hub id; tokenizer_files.tokenizer_hash).

    Raises:
        DataError: no tokenizer files found.
    """
    try:
        return tokenizer_files.tokenizer_hash(tokenizer)
    except (ValueError, OSError) as e:
        raise DataError(str(e)) from e


_ENCODER: list[ChunkEncoder] = []


def _init_worker(encoder: ChunkEncoder) -> None:
    # Forked workers receive the parent's loaded tokenizer instead of loading their own.
    _ENCODER[:] = [encoder]


def _encode_in_worker(chunk) -> EncodedChunk:
    return _ENCODER[0](chunk)


def _encoded(path: Path, encoder: ChunkEncoder, workers: int) -> Iterator[EncodedChunk]:
    """Encoded chunks in file order. With workers, the main process reads the next chunks and
    writes the finished ones while the pool encodes; at most PREFETCH_PER_WORKER chunks per worker
    are in flight."""
    chunks = iter_record_chunks(path, CHUNK_RECORDS, CHUNK_CHARS)
    if workers <= 1:
        yield from map(encoder, chunks)
        return
    with multiprocessing.get_context("fork").Pool(workers, _init_worker, (encoder,)) as pool:
        pending: deque = deque()
        for chunk in chunks:
            pending.append(pool.apply_async(_encode_in_worker, (chunk,)))
            if len(pending) >= PREFETCH_PER_WORKER * workers:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()


@contextlib.contextmanager
def _one_thread_per_worker():
    """Each worker tokenizes on one thread (--workers is the number of cores used); also keeps the
    tokenizer's thread pool from existing when the workers are forked."""
    old = os.environ.get("TOKENIZERS_PARALLELISM")
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("TOKENIZERS_PARALLELISM", None)
        else:
            os.environ["TOKENIZERS_PARALLELISM"] = old


def tokenizer_name(tokenizer: str | Path) -> tuple[str, str]:
    """(short name, full path or hub id) of a tokenizer folder or hub id, for manifests and messages."""
    if Path(tokenizer).is_dir():
        return Path(tokenizer).resolve().name, str(Path(tokenizer).resolve())
    return str(tokenizer), str(tokenizer)


def _tokenizer_meta(tok, tokenizer: str, digest: str) -> dict:
    pad = tok.pad_token_id if tok.pad_token_id else tok.eos_token_id  # as the reference: falsy pad -> eos
    name, path = tokenizer_name(tokenizer)
    return {"name": name, "path": path, "class": type(tok).__name__, "vocab_size": len(tok), "hash": digest,
            "bos_id": tok.bos_token_id, "eos_id": tok.eos_token_id, "pad_id": pad}


def _nothing_kept(read: int, dropped: Counter, mode: str, first_skip: str) -> str:
    """Why a file gave no records, in one line."""
    if read == 0:
        return "no records (empty input)"
    counts = ", ".join(f"{k} {v}" for k, v in sorted(dropped.items()))
    why = f"no records kept (read {read}, dropped: {counts})"
    if dropped.get("wrong_mode", 0) * 2 > read:
        other = "finetune" if mode == "pretrain" else "pretrain"
        return f"{why}: these look like {other} records, not {mode} ones"
    if dropped.get("malformed_json", 0) + dropped.get("not_utf8", 0) == read:
        return f"{why}: expected a JSON array of objects or JSONL (one object per line); first: {first_skip}"
    return f"{why}; first: {first_skip}"


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
                    workers: int = 1, strict: bool = False, progress: bool = True, allow_empty: bool = False,
                    tokenizer_digest: str | None = None) -> dict:
    """Tokenize one raw file into `<output_prefix>.bin/.idx/.json`, written atomically.

    Bad records (malformed or undecodable lines, a truncated archive's lost rest) are skipped and
    counted by reason, so read = kept + dropped; the first few are printed with file:line. Kept
    records with a problem (an empty context) are counted under `kept_with_warning`. With
    `strict` the first bad record raises DataError; so does a file with no record kept unless
    `allow_empty`. Either way nothing is written then. `tokenizer_digest` saves rehashing.

    Returns:
        The manifest written to `<output_prefix>.json`.
    """
    input_path, output_prefix = Path(input_path), Path(output_prefix)
    tok = check_inputs([input_path], tokenizer_dir, mode)
    name = dataset_name(input_path)
    instruction = compression_instruction(name) if mode == "finetune" else None
    instruction_ids = list(tok(instruction, add_special_tokens=False)["input_ids"]) if instruction else []
    dtype = optimal_dtype(len(tok))
    output_prefix.parent.mkdir(parents=True, exist_ok=True)
    # Host and pid in the name: builders on several nodes may share one (network) cache folder.
    tmp = temp_path(output_prefix)
    tmp_paths = [Path(f"{tmp}.bin"), Path(f"{tmp}.idx")]
    digest = tokenizer_digest or tokenizer_hash(tokenizer_dir)
    per_document = SEQUENCES_PER_DOCUMENT[mode]
    read, kept, dropped, warned = 0, 0, Counter(), Counter()
    # Skip reports wait for the first kept record: a file that gives nothing ends in one error line.
    held: list[str] = []
    first_skip = ""
    bar = tqdm(desc=f"preprocess {name}", unit="rec", disable=not progress, file=sys.stderr)
    writer = None
    try:
        writer = IndexedWriter(tmp_paths[0], dtype)
        with _one_thread_per_worker():
            for chunk in _encoded(input_path, ChunkEncoder(tok, mode, dtype), workers):
                for j, (pos, line, reason, message) in enumerate(chunk.dropped):
                    kept_before = kept + pos - j  # kept records ahead of this one in the file
                    if held and kept_before:
                        print("\n".join(held), file=sys.stderr)
                        held.clear()
                    dropped[reason] += 1
                    if strict:
                        raise DataError(f"{input_path}:{line}: {message}")
                    first_skip = first_skip or f"line {line}: {message}"
                    if sum(dropped.values()) <= MAX_REPORTED_ERRORS:
                        report = f"{input_path}:{line}: skipped: {message}"
                        if kept_before:
                            print(report, file=sys.stderr)
                        else:
                            held.append(report)
                read += chunk.read
                kept += chunk.read - len(chunk.dropped)
                if held and kept:
                    print("\n".join(held), file=sys.stderr)
                    held.clear()
                warned.update(chunk.warnings)
                writer.add_documents(chunk.tokens, chunk.lengths, per_document)
                bar.update(chunk.read)
        if kept == 0 and not allow_empty:
            raise DataError(f"{input_path}: {_nothing_kept(read, dropped, mode, first_skip)}; nothing written")
        writer.finalize(tmp_paths[1])
        manifest = {
            "format_version": FORMAT_VERSION, "mode": mode, "dataset_name": name, "source_file": input_path.name,
            "source_sha256": file_sha256(input_path), "tokenizer": _tokenizer_meta(tok, str(tokenizer_dir), digest),
            "dtype": np.dtype(dtype).name, "sequences_per_document": per_document,
            "instruction": instruction, "instruction_ids": instruction_ids,
            "flags": {"strict": strict, "workers": workers, "add_context_tag": mode == "finetune",
                      "allow_empty": allow_empty},
            "counts": {"read": read, "kept": kept, "dropped": dict(sorted(dropped.items())),
                       "kept_with_warning": dict(sorted(warned.items()))},
        }
        # The manifest comes last: a prefix counts as complete only once its .json exists.
        Path(f"{output_prefix}.json").unlink(missing_ok=True)
        for src, ext in zip(tmp_paths, (".bin", ".idx")):
            move_into_place(src, Path(f"{output_prefix}{ext}"))
        write_file(Path(f"{output_prefix}.json"), json.dumps(manifest, indent=2))
        return manifest
    finally:
        bar.close()
        if writer is not None:
            writer.close()
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


def describe_counts(counts: dict) -> str:
    """`read R, kept K, dropped {...}[, kept with warning {...}]` of a manifest's counts."""
    text = f"read {counts['read']}, kept {counts['kept']}, dropped {counts['dropped']}"
    if counts.get("kept_with_warning"):
        text += f", kept with warning {counts['kept_with_warning']}"
    return text


def preprocess_files(inputs: list[str | Path], tokenizer_dir: str | Path, output_prefix: str | Path, mode: str, *,
                     workers: int = 1, strict: bool = False, progress: bool = True,
                     allow_empty: bool = False) -> list[Path]:
    """Preprocess several files (all inputs and the tokenizer are checked before anything is written)."""
    prefixes = output_prefixes(inputs, output_prefix)
    check_inputs(inputs, tokenizer_dir, mode)
    digest = tokenizer_hash(tokenizer_dir)
    for path, prefix in zip(inputs, prefixes):
        manifest = preprocess_file(path, tokenizer_dir, prefix, mode, workers=workers, strict=strict,
                                   progress=progress, allow_empty=allow_empty, tokenizer_digest=digest)
        print(f"{path}: {describe_counts(manifest['counts'])} -> {prefix}", file=sys.stderr)
    return prefixes


def ensure_preprocessed(input_path: str | Path, tokenizer: str | Path, mode: str, cache_dir: str | Path, *,
                        tokenizer_digest: str | None = None, allow_empty: bool = False) -> str:
    """Prefix of the preprocessed binaries of a raw file, building them in `cache_dir` if needed.

    The cache key is (file content hash, tokenizer hash, mode, format version); the prefix keeps the
    dataset name as its basename so the task instruction still resolves. The tokenizer (folder or
    hub id) is only loaded when the prefix has to be built.
    """
    if mode not in MODES:
        raise DataError(f"unknown mode {mode!r}; expected one of {MODES}")
    if not Path(input_path).is_file():
        raise DataError(f"{input_path}: no such input file")
    digest = tokenizer_digest or tokenizer_hash(tokenizer)
    key = hashlib.sha256(f"{file_sha256(input_path)}|{digest}|{mode}|{FORMAT_VERSION}".encode()).hexdigest()
    prefix = Path(cache_dir) / key[:24] / dataset_name(input_path)
    if not Path(f"{prefix}.json").is_file():
        preprocess_file(input_path, tokenizer, prefix, mode, progress=False, allow_empty=allow_empty,
                        tokenizer_digest=digest)
    return str(prefix)


def read_manifest(prefix: str | Path) -> dict:
    """The `<prefix>.json` manifest, checked for format version.

    Raises:
        DataError: missing manifest or another format version.
    """
    path = Path(f"{prefix}.json")
    if not path.is_file():
        raise DataError(f"{path}: no manifest; preprocess the data first (tools/preprocess_data.py)")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: unreadable manifest ({e}); preprocess the data again") from e
    if not isinstance(manifest, dict):
        raise DataError(f"{path}: not a manifest; preprocess the data again")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise DataError(f"{path}: format_version {manifest.get('format_version')} != {FORMAT_VERSION}; "
                        "preprocess the data again")
    return manifest
