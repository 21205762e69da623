"""Training-step benchmark at real shapes with random weights (no download).

Drives the real Trainer step (Megatron schedule, DDP, distributed optimizer, AdamW) on a
synthetic sample shaped like DESIGN.md's measurements:
- pretrain: one document of --seq-len tokens, window 1024, ratios cycling 1,2,4,8,
  random selection (packed single pass, or the per-window loop with --window-impl loop);
- finetune: 3584 context tokens at ratio 4 (one encoder chunk with BOS) + 1424 LM tokens.
"""
from __future__ import annotations

import itertools
import json
import math
import tempfile

import numpy as np

from acerag_megatron.data.finetune import FinetuneSample
from acerag_megatron.data.indices import chunk_indices
from acerag_megatron.data.window import build_window_sample
from acerag_megatron.models.arch import ModelArch
from acerag_megatron.training import step_profile

SHAPES = {
    "llama2-7b": dict(model_type="llama", vocab_size=32000, hidden_size=4096, intermediate_size=11008,
                      num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32, head_dim=128,
                      rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=False,
                      max_position_embeddings=4096),
    "qwen3-8b": dict(model_type="qwen3", vocab_size=151936, hidden_size=4096, intermediate_size=12288,
                     num_hidden_layers=36, num_attention_heads=32, num_key_value_heads=8, head_dim=128,
                     rms_norm_eps=1e-6, rope_theta=1000000.0, tie_word_embeddings=False,
                     max_position_embeddings=40960),
    "tiny": dict(model_type="llama", vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                 num_attention_heads=4, num_key_value_heads=2, head_dim=16, rms_norm_eps=1e-6,
                 rope_theta=10000.0, tie_word_embeddings=False, max_position_embeddings=16384),
}
DEFAULT_SEQ = {"llama2-7b": 8192, "qwen3-8b": 7000, "tiny": 2048}


class _CycledRatios:
    """numpy-Generator stand-in: ratios cycle 1,2,4,8 as in the reference measurement; the
    permutations for random selection come from a seeded generator."""

    def __init__(self, seed: int = 0):
        self._cycle = itertools.cycle([1, 2, 4, 8])
        self._rng = np.random.default_rng(seed)

    def choice(self, candidates):
        return next(self._cycle)

    def permutation(self, n):
        return self._rng.permutation(n)


class SyntheticDataset:
    """The same sample at every index (what a fixed-shape benchmark needs)."""

    def __init__(self, sample, n: int = 1 << 20):
        self.sample, self.n = sample, n

    def __len__(self):
        return self.n

    def get(self, index: int, epoch: int):
        return self.sample

    def describe(self) -> str:
        return "synthetic benchmark sample"


def pretrain_sample(vocab: int, seq_len: int, window: int = 1024, encoder_max_length: int = 4096):
    tokens = np.random.default_rng(0).integers(3, vocab, size=seq_len)
    return build_window_sample(tokens, window=window, encoder_max_length=encoder_max_length,
                               comp_candidates=[1, 2, 4, 8], method="random", rng=_CycledRatios())


def finetune_sample(vocab: int, context: int = 3584, ratio: int = 4, lm_tokens: int = 1424):
    rng = np.random.default_rng(0)
    chunk = np.concatenate([[1], rng.integers(3, vocab, size=context)])
    idx = np.asarray(chunk_indices(len(chunk), ratio, 0, "random", rng), dtype=np.int64)
    other = lm_tokens - len(idx)
    head, tail = rng.integers(3, vocab, size=other // 4), rng.integers(3, vocab, size=other - other // 4)
    ids = np.concatenate([head, np.full(len(idx), 100), tail])
    labels = np.full(len(ids), -100)
    labels[-len(tail) // 2:] = ids[-len(tail) // 2:]
    return FinetuneSample(input_ids=ids, labels=labels, placeholder_start=len(head), encoder_chunks=[chunk],
                          encoder_indices=[idx], ratio=ratio)


def loop_lm_tokens(sample) -> int:
    return sum(mu + (e - s) for mu, (s, e) in zip(sample.memory_lengths, sample.segments[1:]))


def packed_lm_tokens(sample) -> int:
    return sum(len(z) for z in sample.selected) + sum(e - s for s, e in sample.segments[1:])


def run_benchmark(model: str, mode: str, seq_len: int | None, steps: int, warmup: int, extra_args: list[str],
                  profile_steps: int = 0) -> dict:
    import torch
    import torch.distributed as dist

    from acerag_megatron.parallel import destroy_parallel
    from acerag_megatron.training.arguments import parse_args
    from acerag_megatron.training.trainer import Trainer

    arch = ModelArch.from_config_dict(dict(SHAPES[model]), source=model)
    seq_len = seq_len or DEFAULT_SEQ[model]
    window = 1024 if model != "tiny" else 256
    sample = pretrain_sample(arch.vocab_size, seq_len, window) if mode == "pretrain" else finetune_sample(arch.vocab_size)
    with tempfile.TemporaryDirectory() as out:
        args = parse_args(["--language_model_name_or_path", model, "--data_files", "synthetic", "--output_dir", out,
                           "--window_mode", str(mode == "pretrain"), "--encoder_num_hidden_layers", "8"
                           if model != "tiny" else "2", "--max_steps", str(steps + warmup), "--save_strategy", "no",
                           "--resume_from_checkpoint", "none", "--learning_rate", "1e-5", *extra_args])
        trainer = Trainer(args, dataset=SyntheticDataset(sample), archs=(arch, arch), load_weights=False)
        results = [trainer.train_step() for _ in range(steps + warmup)][warmup:]
        mem = trainer.memory_gib()
        # What the caching allocator held at most: the figure that decides whether a run fits a GPU.
        reserved = torch.cuda.max_memory_reserved() / 2**30 if trainer.device.device == "cuda" else None
        mb = trainer._step_microbatches()[0]
        estimate = trainer.memory_estimate(mb["lm_input_ids"].numel(), mb["enc_input_ids"].numel(),
                                           int((mb["labels"] != -100).sum()))
        # Profiled after the timed steps so the profiler's overhead stays out of the figures.
        profile = step_profile.profile_steps(trainer.train_step, profile_steps, trainer.device.device == "cuda") \
            if profile_steps else None
        device = trainer.device.describe()
        world = dist.get_world_size()
        destroy_parallel(process_group=True)
    step = float(np.median([r["step_time"] for r in results]))
    tokens = seq_len if mode == "pretrain" else 3584 + 1424
    out = {
        "model": model, "mode": mode, "world_size": world, "device": device,
        "step_time_s": step, "samples_per_s": trainer.global_batch / step,
        "tokens_per_s": tokens * trainer.global_batch / step,
        "context_tokens_per_s": float(np.median([r["context_tokens_per_s"] for r in results])),
        "lm_tokens_per_s": float(np.median([r["lm_tokens_per_s"] for r in results])),
        "model_tflops_per_gpu": float(np.median([r["tflops_per_gpu"] for r in results])),
        "mfu": float(np.median([r["mfu"] for r in results])),
        "peak_memory_gib": mem, "peak_reserved_gib": reserved, "memory_estimate_gib": estimate.as_dict(),
        "loss": results[-1]["loss"], "steps_timed": steps,
        "recompute_encoder": args.recompute_encoder, "recompute_lm": args.recompute_lm, "window_impl": args.window_impl if mode == "pretrain" else None,
    }
    if profile:
        out["profile"] = profile
    if mode == "pretrain":
        out.update(seq_len=seq_len, lm_tokens_packed=packed_lm_tokens(sample), lm_tokens_loop=loop_lm_tokens(sample),
                   ratios=sample.ratios)
    if not math.isfinite(out["loss"]):
        out["warning"] = "non-finite loss"
    return out


def to_json(result: dict) -> str:
    return json.dumps(result, indent=1)
