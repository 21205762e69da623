"""Run checkpoints: `output_dir/checkpoint-<step>/` as the reference lays them out.

Each save holds
  megatron/                     torch_dist state of the encoder parameters and the optimizer
                                (fully reshardable: resume at another TP/DP size works)
  train_state.json              step, consumed samples, scheduler state, the run's identity, flags
  rng/rank_<k>.safetensors      torch RNG state per rank (tensors only: no pickle)
  compressive_encoder/          HF folder (config.json + safetensors): what the next stage and
                                AceRAG's inference load
  checksums.json                size and SHA-256 of every file above (weights/manifest.py)
The folder is written as `checkpoint-<step>.tmp`, fsynced and renamed when every rank has
finished, so a folder named `checkpoint-<step>` is complete when it was written; resume checks
the checksums before loading anything and falls back to the newest checkpoint that verifies.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import time
from pathlib import Path
from typing import Callable, Optional

import psutil
import torch
import torch.distributed as dist
from megatron.core import dist_checkpointing
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from acerag_megatron.optimizer_fixes import init_untouched_optimizer_state, prime_optimizer_for_load
from acerag_megatron.training.in_process_save import InProcessTorchDistSave
from acerag_megatron.weights.atomic import remove_dir, replace_dir, write_file
from acerag_megatron.weights.manifest import (CheckpointError, broadcast_from_rank0, verify_checkpoint_dir,
                                              write_manifest)

_CKPT = re.compile(r"^checkpoint-(\d+)$")
# Temporary names of atomic writes: `.<name>.tmp-<host>-<pid>[.ext]` (weights/atomic.py,
# data/preprocess.py) or `.<name>.tmp<pid>[.ext]` (no host recorded).
_HIDDEN_TMP = re.compile(r"^\..+\.tmp(?:-(?P<host>.+)-|)(?P<pid>\d+)(?:\.\w+)?$")
# A writer on another host (sharing the file system) cannot be asked whether it is alive: its
# temporary file counts as left over once it has not been written to for this long.
STALE_TMP_AGE_S = 600
OPTIM_METADATA = {"distrib_optim_sharding_type": "fully_reshardable", "chained_optim_avoid_prefix": True,
                  "singleton_local_shards": False}
TRAIN_STATE_KEYS = {"step": int, "consumed_samples": int, "scheduler": dict}


def _rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def _barrier():
    if dist.is_initialized():
        dist.barrier()


def fail(message: str):
    """A user-facing error: one line from rank 0, a silent non-zero exit elsewhere."""
    raise SystemExit(message if _rank() == 0 else 1)


def checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    """The `checkpoint-<step>` folders of a run, newest first (complete or not)."""
    root = Path(output_dir)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _CKPT.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found, reverse=True)]


def latest_checkpoint(output_dir: str | os.PathLike) -> Optional[Path]:
    """Highest-step checkpoint with a train_state.json in output_dir (unverified), or None."""
    return next((p for p in checkpoints(output_dir) if (p / "train_state.json").is_file()), None)


# ---------------------------------------------------------------------------- saving
def _encoder_sharded_state_dict(model) -> dict:
    # Only the encoder trains; the frozen LM is reloaded from its HF checkpoint, never saved.
    return model.encoder.sharded_state_dict(prefix="encoder.") if model.encoder is not None else {}


def _has_params(optimizer) -> bool:
    # Pipeline stages after the first hold only frozen LM layers: their optimizer is empty.
    return optimizer is not None and any(len(g["params"]) for g in optimizer.param_groups)


def _state_dict(model, optimizer, is_loading: bool) -> dict:
    sd = {"model": _encoder_sharded_state_dict(model)}
    if _has_params(optimizer):
        sd["optimizer"] = optimizer.sharded_state_dict(sd["model"], is_loading=is_loading, metadata=OPTIM_METADATA)
    return sd


def save_rng(folder: Path, rank: int) -> None:
    states = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state()
    write_file(folder / f"rank_{rank}.safetensors", save_safetensors(states))


def read_rng(folder: Path, rank: int) -> dict | None:
    """This rank's saved RNG states (None when the checkpoint has none for it), read without
    unpickling anything.

    Raises:
        CheckpointError: a legacy `.pt` that holds more than plain tensors.
    """
    path, legacy = folder / f"rank_{rank}.safetensors", folder / f"rank_{rank}.pt"
    if path.is_file():
        return load_safetensors(path.read_bytes())
    if not legacy.is_file():
        return None  # a resume at a larger world size: the new ranks keep their seeded state
    try:  # saved before RNG states were safetensors: plain tensors only
        return torch.load(legacy, weights_only=True, map_location="cpu")
    except Exception as e:  # noqa: BLE001 (any refusal of the unpickler is the answer)
        raise CheckpointError(f"{legacy}: refused (not plain tensors: {str(e).strip().splitlines()[0][:200]})")


def load_rng(folder: Path, rank: int) -> None:
    """Restore this rank's RNG state (collective: a bad file on any rank stops every rank)."""
    try:
        states, problem = read_rng(folder, rank), None
    except CheckpointError as e:
        states, problem = None, str(e)
    problems = [problem]
    if dist.is_initialized():
        problems = [None] * dist.get_world_size()
        dist.all_gather_object(problems, problem)
    if any(problems):
        fail(f"error: {next(p for p in problems if p)}")
    if states is None:
        return
    torch.set_rng_state(states["cpu"])
    if states.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(states["cuda"])


def save_checkpoint(output_dir: str, step: int, model, optimizer, train_state: dict,
                    export_encoder: Callable[[Path], None], save_total_limit: int | None = None) -> Path:
    """Write checkpoint-<step> atomically with its checksums (collective: every rank calls it).

    Args:
        save_total_limit: keep only this many checkpoints (the newest up to this step); None keeps all.
    """
    final = Path(output_dir) / f"checkpoint-{step}"
    tmp = Path(output_dir) / f"checkpoint-{step}.tmp"
    if _rank() == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        (tmp / "megatron").mkdir(parents=True)
        (tmp / "rng").mkdir()
    _barrier()
    if _has_params(optimizer):
        init_untouched_optimizer_state(optimizer)  # a save before the first update (all skipped)
    dist_checkpointing.save(_state_dict(model, optimizer, is_loading=False), str(tmp / "megatron"),
                            sharded_strategy=InProcessTorchDistSave())
    save_rng(tmp / "rng", _rank())
    export_encoder(tmp / "compressive_encoder")
    _barrier()
    if _rank() == 0:
        write_file(tmp / "train_state.json", json.dumps(train_state, indent=2))
    write_manifest(tmp)  # its file list is taken by rank 0 after train_state.json is written
    if _rank() == 0:
        replace_dir(tmp, final)
        if save_total_limit is not None:
            rotate_checkpoints(output_dir, save_total_limit, step)
    _barrier()
    return final


def rotate_checkpoints(output_dir, keep: int, step: int) -> list[Path]:
    """Remove all but the newest `keep` checkpoints up to `step`; return the removed ones.

    Checkpoints above `step` are left alone: they belong to a state this run fell back from
    and its own saves at those steps replace them.
    """
    own = [p for p in checkpoints(output_dir) if int(_CKPT.match(p.name).group(1)) <= step]
    for p in own[keep:]:
        remove_dir(p)
    return own[keep:]


def remove_stale_files(output_dir, data_dirs=()) -> list[Path]:
    """Leftovers of killed runs: unfinished `checkpoint-*.tmp` and moved-aside `.checkpoint-*.old`
    folders in output_dir, and stale hidden temporary files there and in data_dirs (the folders of
    the preprocessed prefixes). Run by one rank at start, before this run writes anything."""
    removed = []
    root = Path(output_dir)
    for p in list(root.iterdir()) if root.is_dir() else []:
        if p.is_dir() and (p.name.startswith("checkpoint-") and p.name.endswith(".tmp")
                           or p.name.startswith(".checkpoint-") and p.name.endswith(".old")):
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    for folder in {root, *map(Path, data_dirs)}:
        for p in list(folder.iterdir()) if folder.is_dir() else []:
            if p.is_file() and _left_over(p):
                p.unlink(missing_ok=True)
                removed.append(p)
    return removed


def _left_over(path: Path) -> bool:
    m = _HIDDEN_TMP.match(path.name)
    if m is None:
        return False
    old = time.time() - path.stat().st_mtime > STALE_TMP_AGE_S
    if m["host"] not in (None, socket.gethostname()):
        return old
    # Without a host in the name the writer may be on another node: its pid says nothing here.
    return not psutil.pid_exists(int(m["pid"])) and (old or m["host"] is not None)


# ---------------------------------------------------------------------------- resuming
def read_train_state(path: Path) -> dict:
    """train_state.json of a checkpoint, checked for the keys resume needs.

    Raises:
        CheckpointError: missing, not JSON, or without step / consumed_samples / scheduler.
    """
    try:
        state = json.loads((Path(path) / "train_state.json").read_text())
    except FileNotFoundError:
        raise CheckpointError("train_state.json: missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"train_state.json: unreadable ({e})") from None
    for key, kind in TRAIN_STATE_KEYS.items():
        if not isinstance(state, dict) or not isinstance(state.get(key), kind):
            raise CheckpointError(f"train_state.json: no {kind.__name__} field {key!r}")
    return state


def checkpoint_problem(path: Path) -> tuple[str | None, bool]:
    """(why `path` cannot be resumed from or None, whether its checksums were verified).

    Collective: every rank calls it and gets the same answer."""
    try:
        verified = verify_checkpoint_dir(path)
        problem = None
        if _rank() == 0:
            try:
                read_train_state(path)
                if not (Path(path) / "megatron" / ".metadata").is_file():
                    problem = "megatron/.metadata: missing"
            except CheckpointError as e:
                problem = str(e)
        problem = broadcast_from_rank0(problem)
    except CheckpointError as e:
        return str(e), False
    return problem, verified


def select_checkpoint(choice: str | None, output_dir) -> Optional[Path]:
    """The checkpoint to resume from for --resume_from_checkpoint `choice` (collective).

    auto: the newest checkpoint-N in output_dir that verifies; newer ones that do not are
    reported with the reason and skipped. A folder: that one, or a one-line error.
    """
    if not choice or choice.lower() in ("none", "false", "no"):
        return None
    say = print if _rank() == 0 else (lambda *a, **k: None)
    if choice.lower() not in ("auto", "true", "latest"):
        problem, verified = checkpoint_problem(Path(choice))
        if problem:
            fail(f"error: --resume_from_checkpoint {choice}: {problem}")
        _note_unverified(Path(choice), verified, say)
        return Path(choice)
    skipped = []
    for path in broadcast_from_rank0(checkpoints(output_dir) if _rank() == 0 else None):
        problem, verified = checkpoint_problem(path)
        if problem is None:
            for name, why in skipped:
                say(f"warning: skipped {name}: {why}", flush=True)
            if skipped:
                say(f"warning: falling back to {path.name}, the newest checkpoint that verifies", flush=True)
            _note_unverified(path, verified, say)
            return path
        skipped.append((path.name, problem))
    if skipped:
        fail(f"error: --output_dir {output_dir}: no checkpoint verifies ("
             + "; ".join(f"{n}: {w}" for n, w in skipped[:3]) + "); --resume_from_checkpoint none starts fresh")
    return None


def _note_unverified(path: Path, verified: bool, say) -> None:
    if not verified:
        say(f"warning: {path}: no checksums.json (saved before checksums): resuming unverified", flush=True)


def load_checkpoint(path: str | os.PathLike, model, optimizer) -> dict:
    """Load encoder params, optimizer and RNG state from a checkpoint folder; return its train_state.

    Call select_checkpoint (or checkpoint_problem) first: this trusts the folder's contents."""
    path = Path(path)
    try:
        state = read_train_state(path)
    except CheckpointError as e:
        fail(f"error: {path}: {e}")
    if _has_params(optimizer):
        prime_optimizer_for_load(optimizer)
    loaded = dist_checkpointing.load(_state_dict(model, optimizer, is_loading=True), str(path / "megatron"))
    if model.encoder is not None:
        model.encoder.load_state_dict({k[len("encoder."):]: v for k, v in loaded["model"].items()})
    if _has_params(optimizer):
        optimizer.load_state_dict(loaded["optimizer"])
    load_rng(path / "rng", _rank())
    return state
