"""Checks of user input that run before any process group or model is built.

A user mistake ends as `SystemExit("error: <flag or file>: <cause>")`. Every rank runs the same
checks on the same inputs, so all of them stop together (none is left waiting in a collective);
`one_error_line` lets only rank 0 print the line. Nothing here imports torch or megatron, and
transformers only inside ModelArch.from_hf, so the checks cost a config read.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Callable

from acerag_megatron.cli.spellings import BothSpellingsMixin
from acerag_megatron.models.arch import ModelArch

# The fields a model's weights are laid out by (all but the depth).
SHAPE_FIELDS = ("family", "vocab_size", "hidden_size", "num_attention_heads", "num_kv_heads", "head_dim",
                "ffn_hidden_size", "tie_word_embeddings")
# What the encoder's states must share with the LM whose input embeddings they replace.
PAIR_FIELDS = ("family", "hidden_size", "vocab_size")
# Ranks run the same checks in step; this covers rank 0 being scheduled a little later.
OTHER_RANKS_LINGER_S = 10.0


def fail(message: str):
    raise SystemExit(f"error: {message}")


class OneLineErrorParser(BothSpellingsMixin, argparse.ArgumentParser):
    """argparse whose mistakes end as one `error: <flag>: <cause>` line instead of usage text; every
    long option is also accepted in its other spelling (`--a_b` / `--a-b`)."""

    def error(self, message: str):
        fail(message.removeprefix("argument "))


def is_rank0() -> bool:
    return os.environ.get("RANK", "0") == "0"


def one_error_line(main: Callable, *args):
    """Run main(*args); a user error's line is printed by rank 0 only, other ranks exit 1 silently.

    The other ranks linger a moment first: torchrun stops every rank as soon as one fails, and
    one that failed first would otherwise take rank 0 down before its line is out.
    """
    try:
        return main(*args)
    except SystemExit as e:
        if isinstance(e.code, str) and not is_rank0():
            time.sleep(OTHER_RANKS_LINGER_S)
            raise SystemExit(1) from None
        raise


def world_size() -> int:
    """The launch's world size, known from torchrun's environment before any process group exists."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def read_arch(path: str, flag: str) -> ModelArch:
    """The architecture of an HF folder or hub id, or a one-line error naming the flag."""
    if not path:
        fail(f"{flag}: no model given")
    local = Path(path).expanduser()
    # A path that cannot be a hub id ('org/name') would otherwise get the hub's repo-id complaint.
    if local.is_absolute() or path.startswith((".", "~")) or local.exists():
        if not local.exists():
            fail(f"{flag} {path}: no such folder")
        if not local.is_dir():
            fail(f"{flag} {path}: is a file, not a model folder")
        if not (local / "config.json").is_file():
            fail(f"{flag} {path}: no config.json in the folder")
    try:
        return ModelArch.from_hf(path)
    except (OSError, ValueError, KeyError, TypeError) as e:
        fail(f"{flag} {path}: {_first_line(e)}")


def check_weight_files(path: str, flag: str) -> None:
    """A local HF folder's weight files exist and their safetensors headers cover the files.

    Hub ids are left to the loader (checking them would download the weights on every rank).
    """
    folder = Path(path)
    if not folder.is_dir():
        return
    from acerag_megatron.weights.hf_folder import chosen_weight_file

    # The file the loader will read, in its order (safetensors before .bin), so both agree.
    used = chosen_weight_file(folder)
    if used is None:
        fail(f"{flag} {path}: no model.safetensors / pytorch_model.bin (or index json) in the folder")
    files = [used.name]
    if used.name.endswith(".index.json"):
        try:
            files = sorted(set(json.loads(used.read_text())["weight_map"].values()))
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            fail(f"{used}: not a weight index ({_first_line(e)})")
        for name in files:
            if not (folder / name).is_file():
                fail(f"{folder / name}: missing (listed in {used.name})")
    from safetensors import SafetensorError, safe_open

    for name in files:
        if name.endswith(".safetensors"):
            try:
                with safe_open(str(folder / name), framework="pt"):
                    pass
            except (SafetensorError, OSError) as e:
                fail(f"{folder / name}: unreadable safetensors file ({_first_line(e)})")


def check_parallel_sizes(arch: ModelArch, source: str, *, tp: int, pp: int, num_layers: int | None,
                         tp_flag: str, pp_flag: str) -> None:
    """TP must split heads, KV heads and the MLP evenly; PP the num_layers pipelined layers (None: the
    stack is not pipelined, as the encoder on the first stage)."""
    if tp < 1:
        fail(f"{tp_flag} {tp}: must be >= 1")
    if pp < 1:
        fail(f"{pp_flag} {pp}: must be >= 1")
    for what, count in (("attention heads", arch.num_attention_heads), ("KV heads", arch.num_kv_heads),
                        ("MLP columns", arch.ffn_hidden_size)):
        if count % tp:
            fail(f"{tp_flag} {tp}: does not divide the {count} {what} of {source}")
    if num_layers is not None and num_layers % pp:
        fail(f"{pp_flag} {pp}: does not divide the {num_layers} layers of {source}")


def check_world_size(tp: int, pp: int, tp_flag: str, pp_flag: str, *, exact: bool) -> None:
    """The launched ranks form whole TP x PP groups (exact: exactly one group, no data parallelism)."""
    world = world_size()
    if exact and world != tp * pp:
        fail(f"{tp_flag} {tp} x {pp_flag} {pp}: needs {tp * pp} ranks, launched with {world}; "
             f"use torchrun --nproc-per-node {tp * pp}")
    if not exact and world % (tp * pp):
        fail(f"{tp_flag} {tp} x {pp_flag} {pp}: a model replica takes {tp * pp} ranks, and the {world} "
             "launched are not a multiple of that")


def _describe(arch: ModelArch, fields) -> str:
    shown = [f"{f} {getattr(arch, f)}" for f in fields if f != "family"]
    return arch.family + (f" ({', '.join(shown)})" if shown else "")


def check_same_model(arch: ModelArch, what: str, other: ModelArch, other_what: str,
                     fields=SHAPE_FIELDS) -> None:
    """Refuse two models that differ in `fields`; the line names both.

    Args:
        what / other_what: e.g. "--hf-config-from DIR" and "checkpoint --megatron-path DIR".
    """
    differ = [f for f in fields if getattr(arch, f) != getattr(other, f)]
    if differ:
        shown = ["family"] + [f for f in differ if f != "family"]
        fail(f"{what}: {_describe(arch, shown)} does not match {other_what}: {_describe(other, shown)}")


def check_output_dir(output: str, inputs: dict[str, str], *, is_earlier_output: Callable[[Path], bool],
                     overwrite: bool, tool: str) -> None:
    """Refuse an --output whose replacement would destroy an input or unrelated files.

    Args:
        inputs: flag -> path of every folder the command reads (hub ids are skipped).
        is_earlier_output: recognises a folder this tool wrote before (replaced without --overwrite).
    """
    out = Path(output).resolve()
    for flag, path in inputs.items():
        if path and Path(path).exists():
            source = Path(path).resolve()
            if out == source or out in source.parents:
                fail(f"--output {output}: would replace the input {flag} {path}")
    if not out.exists():
        for parent in out.parents:
            if parent.exists() and not parent.is_dir():
                fail(f"--output {output}: {parent} is a file, not a folder")
        return
    if not out.is_dir():
        fail(f"--output {output}: exists and is not a folder")
    if overwrite or not any(out.iterdir()) or is_earlier_output(out):
        return
    fail(f"--output {output}: folder is not empty and was not written by {tool}; "
         "pass --overwrite to replace it")
