"""Architecture description read from a Hugging Face config (Llama and Qwen3 families)."""
from __future__ import annotations

import dataclasses
from typing import Any

FAMILIES = ("llama", "qwen3")
"""The HF model_type values this project runs."""


@dataclasses.dataclass
class ModelArch:
    """The architecture facts the Megatron models and the weight mapping need."""

    family: str
    """'llama' or 'qwen3'."""
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_attention_heads: int
    num_kv_heads: int
    head_dim: int
    ffn_hidden_size: int
    rms_norm_eps: float
    rope_theta: float
    tie_word_embeddings: bool
    qk_norm: bool
    """Per-head RMSNorm on queries and keys (Qwen3)."""
    max_position_embeddings: int
    hf_config: dict = dataclasses.field(default_factory=dict, repr=False)
    """The source config as a dict (used to write exported config.json files)."""

    @classmethod
    def from_hf(cls, name_or_path: str) -> "ModelArch":
        """Read the architecture from an HF model folder or hub id (config.json only).

        A hub id's config.json comes through the HF cache (HF_HUB_OFFLINE honoured), so a
        missing id fails with what is missing rather than a connection message.

        Raises:
            FileNotFoundError: a hub id with no config.json on the hub or in the HF cache.
            ValueError: for an unsupported model family, biases or RoPE scaling.
        """
        from pathlib import Path

        from transformers import AutoConfig

        from acerag_megatron.weights.hf_folder import hub_config_file

        folder = Path(name_or_path)
        if not folder.is_dir():
            folder = hub_config_file(str(name_or_path)).parent
        config = AutoConfig.from_pretrained(str(folder)).to_dict()
        config["_name_or_path"] = str(name_or_path)  # the id, as transformers records it, not the snapshot
        return cls.from_config_dict(config, source=str(name_or_path))

    @classmethod
    def from_config_dict(cls, cfg: dict[str, Any], source: str = "config") -> "ModelArch":
        """Build from a config dict (as in config.json)."""
        family = cfg.get("model_type", "")
        if family not in FAMILIES:
            raise ValueError(f"{source}/config.json: field model_type={cfg.get('model_type')!r} "
                             f"is not supported (expected one of {sorted(FAMILIES)})")
        for field in ("attention_bias", "mlp_bias", "use_sliding_window"):
            if cfg.get(field):
                raise ValueError(f"{source}/config.json: field {field}=true is not supported")
        if cfg.get("hidden_act", "silu") != "silu":
            raise ValueError(f"{source}/config.json: field hidden_act={cfg['hidden_act']!r} is not supported (silu only)")
        rope = cfg.get("rope_parameters") or cfg.get("rope_scaling") or {}
        rope_type = rope.get("rope_type", rope.get("type", "default"))
        if rope_type != "default":
            raise ValueError(f"{source}/config.json: field rope_parameters.rope_type={rope_type!r} is not supported")
        theta = rope.get("rope_theta", cfg.get("rope_theta"))
        if theta is None:
            raise ValueError(f"{source}/config.json: field rope_theta is missing")
        heads = cfg["num_attention_heads"]
        return cls(
            family=family,
            vocab_size=cfg["vocab_size"],
            hidden_size=cfg["hidden_size"],
            num_layers=cfg["num_hidden_layers"],
            num_attention_heads=heads,
            num_kv_heads=cfg.get("num_key_value_heads") or heads,
            head_dim=cfg.get("head_dim") or cfg["hidden_size"] // heads,
            ffn_hidden_size=cfg["intermediate_size"],
            rms_norm_eps=cfg["rms_norm_eps"],
            rope_theta=float(theta),
            tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
            qk_norm=family == "qwen3",
            max_position_embeddings=cfg.get("max_position_embeddings", 4096),
            hf_config=dict(cfg),
        )
