"""torch_dist checkpoints of sharded state dicts (resharding across TP/PP on load).

Saves go to `<dir>.tmp`, get a checksum manifest (weights/manifest.py) and are renamed into
place by rank 0 once every rank has written; loads verify the manifest first, because torch's
reader unpickles `.metadata`. Use the unwrapped module's sharded_state_dict(): a DDP wrapper
prefixes keys with `module.`.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch.distributed as dist
from megatron.core import dist_checkpointing

from acerag_megatron.weights.atomic import replace_dir, write_file
from acerag_megatron.weights.manifest import CheckpointError, verify_for_load, write_manifest

EXTRA_INFO_FILE = "acerag_info.json"


def save_sharded(state: dict, directory, extra_info: dict | None = None) -> Path:
    """Collectively save a sharded state dict with the torch_dist format.

    Args:
        state: e.g. {"model": module.sharded_state_dict()}.
        directory: destination; replaced atomically.
        extra_info: small JSON-able dict written beside the checkpoint (acerag_info.json).
    """
    directory = Path(directory)
    tmp = directory.parent / f"{directory.name}.tmp"
    if dist.get_rank() == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    dist.barrier()
    dist_checkpointing.save(state, str(tmp))
    dist.barrier()
    if dist.get_rank() == 0 and extra_info is not None:
        write_file(tmp / EXTRA_INFO_FILE, json.dumps(extra_info, indent=2))
    write_manifest(tmp)
    if dist.get_rank() == 0:
        replace_dir(tmp, directory)
    dist.barrier()
    return directory


def load_sharded(template: dict, directory) -> dict:
    """Collectively load into the shapes of `template` (a sharded state dict); returns the loaded dict.

    A checksum manifest in `directory` (save_sharded's) or its parent (a trainer checkpoint-N's)
    is verified first: a folder that does not match it ends the program with one line.

    Raises:
        FileNotFoundError: when `directory` holds no torch_dist checkpoint.
    """
    directory = Path(directory)
    if not (directory / "metadata.json").exists():
        raise FileNotFoundError(f"{directory}: not a Megatron distributed checkpoint (metadata.json missing)")
    try:
        verify_for_load(directory)
    except CheckpointError as e:
        raise SystemExit(f"error: {e}" if dist.get_rank() == 0 else 1) from None
    return dist_checkpointing.load(template, str(directory))


def read_extra_info(directory) -> dict:
    """The acerag_info.json written by save_sharded (empty dict when absent)."""
    path = Path(directory) / EXTRA_INFO_FILE
    return json.loads(path.read_text()) if path.exists() else {}


def save_module(module, directory, extra_info: dict | None = None) -> Path:
    """Save an (unwrapped) Megatron module's weights."""
    return save_sharded({"model": module.sharded_state_dict()}, directory, extra_info)


def load_module(module, directory) -> None:
    """Load an (unwrapped) Megatron module's weights saved by save_module at any TP/PP."""
    loaded = load_sharded({"model": module.sharded_state_dict()}, directory)
    module.load_state_dict(loaded["model"], strict=True)


__all__ = ["save_sharded", "load_sharded", "read_extra_info", "save_module", "load_module"]
