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


def _is_model_dir(folder: Path) -> bool:
    # A run folder also holds a config.json (the training config); only a model folder has weights.
    return (folder / "config.json").is_file() and any(
        any(folder.glob(pattern)) for pattern in ("*.safetensors", "*.safetensors.index.json", "pytorch_model*.bin"))


def _latest_checkpoint(run_dir: Path) -> Path | None:
    steps = [(int(p.name.split("-", 1)[1]), p) for p in run_dir.glob("checkpoint-*")
             if p.is_dir() and p.name.split("-", 1)[1].isdigit()]
    return max(steps)[1] if steps else None


def resolve_encoder_dir(path: str | os.PathLike) -> Path:
    """The exported encoder folder behind `path`.

    Accepts the folder itself, a `checkpoint-N` folder holding one of ENCODER_SUBFOLDERS, or a
    run folder, whose highest-step complete `checkpoint-N` is used (as AceRAG's scripts pick it).

    Raises:
        FileNotFoundError: when no folder with config.json and weights is found.
    """
    root = Path(path)
    candidates = [root]
    latest = _latest_checkpoint(root) if root.is_dir() else None
    for base in [root] + ([latest] if latest else []):
        candidates += [base / name for name in ENCODER_SUBFOLDERS]
    for folder in candidates:
        if _is_model_dir(folder):
            return folder
    raise FileNotFoundError(f"{root}: no encoder (config.json + weights) here, in {' / '.join(ENCODER_SUBFOLDERS)}, "
                            "or in the latest checkpoint-N")


def load_encoder(encoder_path: str | os.PathLike, device: torch.device | str = "cpu",
                 dtype: torch.dtype | None = None):
    """The exported N-layer base model (AutoModel; output = last_hidden_state) in eval mode."""
    from transformers import AutoModel

    enc = AutoModel.from_pretrained(str(resolve_encoder_dir(encoder_path)), dtype=dtype or default_dtype(device))
    return enc.to(device).eval().requires_grad_(False)


def check_encoder_matches_lm(lm_path: str | os.PathLike, encoder_path: str | os.PathLike) -> None:
    """The encoder's states can stand in for the LM's input embeddings: same family, hidden size
    and vocabulary (it reads the LM tokenizer's ids). Reads the two configs only.

    Raises:
        ValueError: naming both models and what differs; OSError when a config cannot be read.
    """
    from transformers import AutoConfig

    encoder_dir = resolve_encoder_dir(encoder_path)
    lm, enc = AutoConfig.from_pretrained(str(lm_path)), AutoConfig.from_pretrained(str(encoder_dir))
    fields = ("model_type", "hidden_size", "vocab_size")
    if any(getattr(lm, f, None) != getattr(enc, f, None) for f in fields):
        def describe(config):
            return f"{config.model_type} (hidden_size {config.hidden_size}, vocab_size {config.vocab_size})"

        raise ValueError(f"--encoder {encoder_path}: {describe(enc)} does not match the LM --lm {lm_path}: "
                         f"{describe(lm)}")
