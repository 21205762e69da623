"""Latency of plain RAG vs compression ratios 2/4/8/16 on the same inputs; prints JSON.

    python tools/latency_benchmark.py                         # tiny random Llama on CPU
    python tools/latency_benchmark.py --shape llama2-7b --device cuda   # random weights, real shape
    python tools/latency_benchmark.py --lm meta-llama/Llama-2-7b-chat-hf \
        --encoder out/checkpoint-1250 --device cuda --context_tokens 3000 --batch_size 4
"""
from __future__ import annotations

import json
import platform
import sys
import tempfile
from pathlib import Path

from acerag_megatron.cli.spellings import ToolParser


def tiny_models(root: Path, hidden_size: int, num_layers: int, encoder_layers: int) -> tuple[Path, Path]:
    """A tiny random Llama LM (with tokenizer) and an encoder cut from its first layers."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    from acerag_megatron.tiny.models import make_tiny_hf_model
    from acerag_megatron.tiny.tokenizers import make_tiny_tokenizer

    lm_dir = make_tiny_tokenizer("llama", root / "lm")
    make_tiny_hf_model("llama", lm_dir, vocab_size=len(AutoTokenizer.from_pretrained(lm_dir)),
                       hidden_size=hidden_size, num_layers=num_layers, max_position_embeddings=8192)
    cfg = AutoConfig.from_pretrained(lm_dir)
    cfg.num_hidden_layers = encoder_layers
    if getattr(cfg, "layer_types", None):
        cfg.layer_types = cfg.layer_types[:encoder_layers]
    AutoModel.from_pretrained(lm_dir, config=cfg).save_pretrained(root / "encoder")
    return lm_dir, root / "encoder"


# Public model shapes (random weights: timings only; no download needed).
SHAPES = {
    "llama2-7b": ("llama", dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                                num_attention_heads=32, num_key_value_heads=32, vocab_size=32000,
                                max_position_embeddings=4096, rope_theta=10000.0)),
    "qwen3-8b": ("qwen3", dict(hidden_size=4096, intermediate_size=12288, num_hidden_layers=36,
                               num_attention_heads=32, num_key_value_heads=8, head_dim=128, vocab_size=151936,
                               max_position_embeddings=40960, rope_theta=1000000.0)),
}


def random_shape_models(shape: str, root: Path, device: str, dtype, encoder_layers: int):
    """(tokenizer dir, LM, encoder) with random weights at a real shape, built directly on `device`."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, LlamaModel, Qwen3Config
    from transformers import Qwen3ForCausalLM, Qwen3Model

    from acerag_megatron.tiny.tokenizers import make_tiny_tokenizer

    family, spec = SHAPES[shape]
    spec = dict(spec)
    rope = {"rope_type": "default", "rope_theta": spec.pop("rope_theta")}
    config_cls, lm_cls, enc_cls = ((LlamaConfig, LlamaForCausalLM, LlamaModel) if family == "llama"
                                   else (Qwen3Config, Qwen3ForCausalLM, Qwen3Model))
    tok_dir = make_tiny_tokenizer(family, root / "tok")
    assert len(AutoTokenizer.from_pretrained(tok_dir)) <= spec["vocab_size"]
    lm_cfg = config_cls(**spec, rope_parameters=rope, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    enc_cfg = config_cls(**{**spec, "num_hidden_layers": encoder_layers}, rope_parameters=rope, bos_token_id=1,
                         eos_token_id=2, pad_token_id=0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            lm, enc = lm_cls(lm_cfg).eval(), enc_cls(enc_cfg).eval()
    finally:
        torch.set_default_dtype(previous)
    return tok_dir, lm.requires_grad_(False), enc.requires_grad_(False)


def main(argv: list[str] | None = None) -> int:
    p = ToolParser(description=__doc__.split("\n")[0])
    p.add_argument("--lm", help="LM folder or hub id (default: a tiny random Llama)")
    p.add_argument("--encoder", help="exported encoder folder (required with --lm)")
    p.add_argument("--device", help="default: cuda when available, else cpu")
    p.add_argument("--dtype", choices=["bfloat16", "float16", "float32"])
    p.add_argument("--ratios", default="none,2,4,8,16", help="comma list; 'none' = plain RAG")
    p.add_argument("--batch_size", type=int, default=1)
    p.add_argument("--context_tokens", type=int, default=512)
    p.add_argument("--new_tokens", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--lm_max_length", type=int, default=4096)
    p.add_argument("--encoder_max_length", type=int, default=4096)
    p.add_argument("--shape", choices=["tiny", *SHAPES], default="tiny",
                   help="without --lm: a tiny random Llama, or random weights at a public model's shape")
    p.add_argument("--encoder_layers", type=int, default=8, help="encoder depth for --shape models")
    p.add_argument("--tiny_hidden_size", type=int, default=128)
    p.add_argument("--tiny_layers", type=int, default=4)
    p.add_argument("--tiny_encoder_layers", type=int, default=2)
    args = p.parse_args(argv)
    if args.lm and not args.encoder:
        p.error("--encoder is required with --lm")
    import torch
    from transformers.utils import logging as hf_logging

    from acerag_megatron.inference.latency import benchmark
    from acerag_megatron.inference.loading import default_dtype, load_encoder, load_lm, load_tokenizer

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = getattr(torch, args.dtype) if args.dtype else None
    ratios = tuple(None if r.strip().lower() == "none" else int(r) for r in args.ratios.split(","))
    with tempfile.TemporaryDirectory() as tmp:
        if args.lm:
            tok, lm, enc = load_tokenizer(args.lm), load_lm(args.lm, device, dtype), load_encoder(args.encoder, device,
                                                                                                  dtype)
        elif args.shape != "tiny":
            tok_dir, lm, enc = random_shape_models(args.shape, Path(tmp), device, dtype or default_dtype(device),
                                                   args.encoder_layers)
            tok = load_tokenizer(tok_dir)
        else:
            lm_dir, enc_dir = tiny_models(Path(tmp), args.tiny_hidden_size, args.tiny_layers,
                                          args.tiny_encoder_layers)
            tok, lm, enc = load_tokenizer(lm_dir), load_lm(lm_dir, device, dtype), load_encoder(enc_dir, device, dtype)
        rows = benchmark(lm, enc, tok, ratios=ratios, batch_size=args.batch_size, context_tokens=args.context_tokens,
                         new_tokens=args.new_tokens, repeats=args.repeats, lm_max_length=args.lm_max_length,
                         encoder_max_length=args.encoder_max_length)
    name = args.lm or (f"random {args.shape}" if args.shape != "tiny" else "tiny-llama")
    report = {"lm": name, "encoder": args.encoder or f"{name} bottom layers (random)",
              "device": str(lm.device), "device_name": torch.cuda.get_device_name() if lm.device.type == "cuda" else
              platform.processor() or platform.machine(), "dtype": str(lm.dtype).replace("torch.", ""),
              "batch_size": args.batch_size, "context_tokens": args.context_tokens, "new_tokens": args.new_tokens,
              "results": rows}
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
