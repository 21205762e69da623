"""config.json files that transformers 4.57.x (AceRAG's pin) and 5.x read into the same model.

transformers 5 keeps RoPE settings only in `rope_parameters`; 4.57 reads the top-level
`rope_theta` / `rope_scaling` and silently falls back to its default base (10,000) without them,
which is wrong for Qwen3 (1,000,000). Every config we write therefore carries both spellings:
5.x takes `rope_parameters` (it prefers that over the legacy keys), 4.57 takes the legacy ones.
The dtype likewise goes under `dtype` (>= 4.56) and `torch_dtype` (older readers).
"""
from __future__ import annotations

import json
from pathlib import Path

# Keys of a flat `rope_parameters` dict that 4.57 reads from the top level instead.
_TOP_LEVEL_ROPE_KEYS = ("rope_theta", "partial_rotary_factor")
# Written by from_pretrained for the folder it read; meaningless (and machine-specific) elsewhere.
_DROPPED_KEYS = ("_name_or_path",)


def read_hf_config(name_or_path: str) -> dict:
    """The full config of an HF folder or hub id as transformers (installed version) resolves it.

    Going through the config class rather than the raw file puts every field in the dict
    (including those equal to a default, which a 4.57 reader might default differently) and
    turns a legacy-only config into one with `rope_parameters`.
    """
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(str(name_or_path)).to_dict()
    for key in _DROPPED_KEYS:
        config.pop(key, None)
    return config


def _rope_parameters(config: dict) -> dict:
    rope = config.get("rope_parameters")
    if rope is None:  # a config written by transformers 4.x
        rope = dict(config.get("rope_scaling") or {})
        rope.setdefault("rope_type", rope.pop("type", "default"))
        if "rope_theta" in config:
            rope.setdefault("rope_theta", config["rope_theta"])
    if isinstance(rope, dict) and any(isinstance(v, dict) for v in rope.values()):
        raise ValueError("config.json: field rope_parameters is nested per layer type, which transformers "
                         "4.57 cannot read from top-level keys")
    if not isinstance(rope, dict) or "rope_theta" not in rope:
        raise ValueError(f"config.json: field rope_parameters={rope!r} has no rope_theta")
    return dict(rope)


def both_versions(config: dict) -> dict:
    """`config` with the RoPE and dtype settings under both the 5.x and the 4.57 key names.

    Raises:
        ValueError: when the RoPE settings have no base, or differ per layer type.
    """
    out = {k: v for k, v in config.items() if k not in _DROPPED_KEYS}
    rope = _rope_parameters(config)
    out["rope_parameters"] = rope
    for key in _TOP_LEVEL_ROPE_KEYS:
        if key in rope:
            out[key] = rope[key]
    scaling = {k: v for k, v in rope.items() if k not in _TOP_LEVEL_ROPE_KEYS}
    out["rope_scaling"] = None if scaling.get("rope_type", "default") == "default" else scaling
    dtype = config.get("dtype") or config.get("torch_dtype")
    if dtype is not None:
        out["dtype"] = out["torch_dtype"] = str(dtype).removeprefix("torch.")
    return out


def write_hf_config(config: dict, folder) -> Path:
    """Write `folder/config.json` in the form both transformers versions read; returns its path."""
    path = Path(folder) / "config.json"
    path.write_text(json.dumps(both_versions(config), indent=2, sort_keys=True) + "\n")
    return path
