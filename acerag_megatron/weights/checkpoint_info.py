"""What a Megatron checkpoint folder holds, read from its small JSON files only.

Two layouts are understood:
  - a hf_to_megatron output: torch_dist files + acerag_info.json (role, depth, source config, dtype);
  - a trainer checkpoint `checkpoint-N/megatron` (or `checkpoint-N`): the encoder's parameters
    under `encoder.`, described by the sibling train_state.json and compressive_encoder/config.json.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from acerag_megatron.models.arch import ModelArch
from acerag_megatron.preflight import fail

EXTRA_INFO_FILE = "acerag_info.json"  # the name weights/dist_ckpt.py writes
TRAINER_ENCODER_PREFIX = "encoder."


@dataclasses.dataclass
class CheckpointInfo:
    path: Path
    """The torch_dist folder itself."""
    role: str
    num_layers: int
    arch: ModelArch
    source_dtype: str | None
    """The dtype the weights came in (source HF config, or the trainer's parameter dtype)."""
    key_prefix: str
    """Prefix of the module's keys inside the checkpoint's "model" entry."""


def _read_json(path: Path, flag: str) -> dict:
    try:
        value = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as e:
        fail(f"{flag} {path}: unreadable ({e.__class__.__name__})")
    except json.JSONDecodeError as e:
        fail(f"{flag} {path}:{e.lineno}: invalid JSON ({e.msg})")
    if not isinstance(value, dict):
        fail(f"{flag} {path}: expected a JSON object")
    return value


def config_dtype(config: dict) -> str | None:
    """The dtype an HF config records (transformers >= 4.56 writes `dtype`, older `torch_dtype`)."""
    value = config.get("dtype") or config.get("torch_dtype")
    return value if value in ("bfloat16", "float16", "float32") else None


def is_hf_to_megatron_output(folder: Path) -> bool:
    return (folder / EXTRA_INFO_FILE).is_file() and (folder / "metadata.json").is_file()


def read_checkpoint_info(path: str, flag: str = "--megatron-path") -> CheckpointInfo:
    """Describe a checkpoint folder, or stop with a one-line error naming `flag`."""
    folder = Path(path)
    if (folder / "megatron").is_dir() and (folder / "train_state.json").is_file():
        folder = folder / "megatron"  # a trainer's checkpoint-N given without its megatron/ part
    if not folder.is_dir():
        fail(f"{flag} {path}: no such folder")
    if not (folder / "metadata.json").is_file():
        fail(f"{flag} {path}: not a Megatron torch_dist checkpoint (metadata.json missing)")
    _read_json(folder / "metadata.json", flag)
    if not (folder / ".metadata").is_file():
        fail(f"{flag} {path}: incomplete torch_dist checkpoint (.metadata missing)")
    if (folder / EXTRA_INFO_FILE).is_file():
        info = _read_json(folder / EXTRA_INFO_FILE, flag)
        missing = [k for k in ("role", "num_layers", "hf_config") if k not in info]
        if missing:
            fail(f"{flag} {folder / EXTRA_INFO_FILE}: field {missing[0]} missing")
        arch = _arch(info["hf_config"], folder / EXTRA_INFO_FILE, flag)
        return CheckpointInfo(folder, info["role"], int(info["num_layers"]), arch,
                              config_dtype(info["hf_config"]) or info.get("source_dtype"), key_prefix="")
    run_checkpoint = folder.parent
    if (run_checkpoint / "train_state.json").is_file():
        state = _read_json(run_checkpoint / "train_state.json", flag)
        config_file = run_checkpoint / "compressive_encoder" / "config.json"
        if not config_file.is_file():
            fail(f"{flag} {path}: trainer checkpoint without {config_file.relative_to(run_checkpoint)}")
        config = _read_json(config_file, flag)
        arch = _arch(config, config_file, flag)
        args = state.get("args", {})
        num_layers = int(args.get("encoder_num_hidden_layers", arch.num_layers))
        # The trainer's own export beside it is the source config; its dtype (bf16, as the reference
        # exports) is also the parameters' dtype whenever training ran in bf16.
        dtype = config_dtype(config) or ("bfloat16" if args.get("bf16") else "float32")
        return CheckpointInfo(folder, "encoder", num_layers, arch, dtype, key_prefix=TRAINER_ENCODER_PREFIX)
    fail(f"{flag} {path}: neither {EXTRA_INFO_FILE} (hf_to_megatron) nor ../train_state.json (trainer checkpoint)")


def _arch(config: dict, where: Path, flag: str) -> ModelArch:
    try:
        return ModelArch.from_config_dict(config, source=str(where.parent))
    except (ValueError, KeyError, TypeError) as e:
        fail(f"{flag} {where}: unusable model config ({e})")
