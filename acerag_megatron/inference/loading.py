"""Load the frozen LM, its tokenizer and an exported compressive encoder folder with transformers."""
from __future__ import annotations

import os
from pathlib import Path

import torch

from acerag_megatron.data import chat

# Sub-folder names a training checkpoint may use for the exported encoder (seed vs. later AceRAG).
ENCODER_SUBFOLDERS = ("compressive_encoder", "context_compressor")


def default_dtype(device: torch.device | str) -> torch.dtype:
    """bf16 on accelerators (as AceRAG serves), fp32 on CPU where bf16 matmuls are slow and lossy."""
    return torch.float32 if torch.device(device).type == "cpu" else torch.bfloat16


def load_tokenizer(lm_path: str | os.PathLike):
    """LM tokenizer set up as AceRAG uses it: CONTEXT_TAG special, left padding, pad = eos when unset.

    The tag only ever appears in the prompt-without-context tokenisation that locates the context;
    it never reaches a model, so no embedding matrix is resized.
    """
    tok = chat.load_tokenizer(str(lm_path), add_context_tag=True)
    tok.padding_side = "left"
    if not tok.pad_token_id:
        tok.pad_token = tok.eos_token
    return tok


def load_lm(lm_path: str | os.PathLike, device: torch.device | str = "cpu", dtype: torch.dtype | None = None):
    """The causal LM (HF folder or hub id) in eval mode, frozen."""
    from transformers import AutoModelForCausalLM

    lm = AutoModelForCausalLM.from_pretrained(str(lm_path), dtype=dtype or default_dtype(device))
    return lm.to(device).eval().requires_grad_(False)


def resolve_encoder_dir(path: str | os.PathLike) -> Path:
    """Accept an exported encoder folder or a checkpoint folder holding one of ENCODER_SUBFOLDERS.

    Raises:
        FileNotFoundError: when no config.json is found in either place.
    """
    root = Path(path)
    if (root / "config.json").is_file():
        return root
    for name in ENCODER_SUBFOLDERS:
        if (root / name / "config.json").is_file():
            return root / name
    raise FileNotFoundError(f"{root}: no config.json here or in {' / '.join(ENCODER_SUBFOLDERS)}")


def load_encoder(encoder_path: str | os.PathLike, device: torch.device | str = "cpu",
                 dtype: torch.dtype | None = None):
    """The exported N-layer base model (AutoModel; output = last_hidden_state) in eval mode."""
    from transformers import AutoModel

    enc = AutoModel.from_pretrained(str(resolve_encoder_dir(encoder_path)), dtype=dtype or default_dtype(device))
    return enc.to(device).eval().requires_grad_(False)
