"""Tiny random Hugging Face Llama / Qwen3 models, made on the fly for tests and the CPU quickstart."""
from __future__ import annotations

from pathlib import Path

import torch

from acerag_megatron.weights.hf_config import write_hf_config


def make_tiny_hf_model(family: str, out_dir, vocab_size: int, *, hidden_size: int = 64, num_layers: int = 4,
                       heads: int = 4, kv_heads: int = 2, head_dim: int | None = None, seed: int = 0,
                       tie_word_embeddings: bool = False, dtype: torch.dtype = torch.float32,
                       intermediate_size: int | None = None, max_position_embeddings: int = 2048) -> Path:
    """Save a random LlamaForCausalLM / Qwen3ForCausalLM folder (safetensors) and return its path.

    Norm weights are randomised too (HF initialises them to 1), so a wrong norm mapping shows.
    Qwen3 defaults to head_dim 32, which differs from hidden/heads for the default sizes.

    Raises:
        ValueError: for an unknown family.
    """
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen3Config, Qwen3ForCausalLM

    common = dict(vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=intermediate_size or 2 * hidden_size,
                  num_hidden_layers=num_layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                  max_position_embeddings=max_position_embeddings, rms_norm_eps=1e-6,
                  tie_word_embeddings=tie_word_embeddings, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    torch.manual_seed(seed)
    if family == "llama":
        config = LlamaConfig(**common, head_dim=head_dim or hidden_size // heads,
                             rope_parameters={"rope_type": "default", "rope_theta": 10000.0})
        model = LlamaForCausalLM(config)
    elif family == "qwen3":
        config = Qwen3Config(**common, head_dim=head_dim or 32,
                             rope_parameters={"rope_type": "default", "rope_theta": 1000000.0})
        model = Qwen3ForCausalLM(config)
    else:
        raise ValueError(f"family: unknown value {family!r}, expected 'llama' or 'qwen3'")
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name:
                param.copy_(torch.rand(param.shape, generator=generator) + 0.5)
    out = Path(out_dir)
    model.to(dtype).save_pretrained(out, safe_serialization=True)
    # save_pretrained writes transformers 5's keys only; AceRAG's 4.57 would read Qwen3 with RoPE base 1e4.
    write_hf_config(model.config.to_dict(), out)
    return out
