"""Run checkpoints: `output_dir/checkpoint-<step>/` as the reference lays them out.

Each save holds
  megatron/             torch_dist state of the encoder parameters and the optimizer
                        (fully reshardable: resume at another TP/DP size works)
  train_state.json      step, consumed samples, scheduler state, flags
  rng/rank_<k>.pt       torch RNG state per rank
  compressive_encoder/  HF folder (config.json + safetensors): what the next stage and
                        AceRAG's inference load
The folder is written as `checkpoint-<step>.tmp` and renamed when every rank has finished,
so a folder named `checkpoint-<step>` is always complete; a killed save leaves only a .tmp
that the next save replaces.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.distributed as dist
from megatron.core import dist_checkpointing

from acerag_megatron.optimizer_fixes import prime_optimizer_for_load

_CKPT = re.compile(r"^checkpoint-(\d+)$")
OPTIM_METADATA = {"distrib_optim_sharding_type": "fully_reshardable", "chained_optim_avoid_prefix": True,
                  "singleton_local_shards": False}


def latest_checkpoint(output_dir: str | os.PathLike) -> Optional[Path]:
    """Highest-step complete checkpoint in output_dir, or None."""
    root = Path(output_dir)
    if not root.is_dir():
        return None
    found = [(int(m.group(1)), p) for p in root.iterdir()
             if (m := _CKPT.match(p.name)) and (p / "train_state.json").is_file()]
    return max(found)[1] if found else None


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


def _rank0() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


def _barrier():
    if dist.is_initialized():
        dist.barrier()


def save_checkpoint(output_dir: str, step: int, model, optimizer, train_state: dict,
                    export_encoder: Callable[[Path], None]) -> Path:
    """Write checkpoint-<step> atomically (collective: every rank calls it)."""
    final = Path(output_dir) / f"checkpoint-{step}"
    tmp = Path(output_dir) / f"checkpoint-{step}.tmp"
    if _rank0():
        shutil.rmtree(tmp, ignore_errors=True)
        (tmp / "megatron").mkdir(parents=True)
        (tmp / "rng").mkdir()
    _barrier()
    dist_checkpointing.save(_state_dict(model, optimizer, is_loading=False), str(tmp / "megatron"))
    rank = dist.get_rank() if dist.is_initialized() else 0
    torch.save({"cpu": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() else None},
               tmp / "rng" / f"rank_{rank}.pt")
    export_encoder(tmp / "compressive_encoder")
    _barrier()
    if _rank0():
        (tmp / "train_state.json").write_text(json.dumps(train_state, indent=2))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    _barrier()
    return final


def load_checkpoint(path: str | os.PathLike, model, optimizer) -> dict:
    """Load encoder params and optimizer state from a checkpoint folder; return its train_state."""
    path = Path(path)
    if not (path / "train_state.json").is_file():
        raise SystemExit(f"error: {path}: not a complete checkpoint (train_state.json missing)")
    if _has_params(optimizer):
        prime_optimizer_for_load(optimizer)
    loaded = dist_checkpointing.load(_state_dict(model, optimizer, is_loading=True), str(path / "megatron"))
    if model.encoder is not None:
        model.encoder.load_state_dict({k[len("encoder."):]: v for k, v in loaded["model"].items()})
    if _has_params(optimizer):
        optimizer.load_state_dict(loaded["optimizer"])
    rank = dist.get_rank() if dist.is_initialized() else 0
    rng_file = path / "rng" / f"rank_{rank}.pt"
    if rng_file.is_file():
        rng = torch.load(rng_file, weights_only=False)
        torch.set_rng_state(rng["cpu"])
        if rng.get("cuda") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state(rng["cuda"])
    return json.loads((path / "train_state.json").read_text())
