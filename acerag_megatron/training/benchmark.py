"""Training-step benchmark at real shapes with random weights (no download).

Drives the real Trainer step (Megatron schedule, DDP, distributed optimizer, AdamW) on a
synthetic sample shaped like DESIGN.md's measurements:
- pretrain: one document of --seq-len tokens, window 1024, ratios cycling 1,2,4,8,
  random selection (packed single pass, or the per-window loop with --window-impl loop);
- finetune: 3584 context tokens at ratio 4 (one encoder chunk with BOS) + 1424 LM tokens.

run_workload times a few representative lengths of a length distribution the same way and
projects the distribution's figures at DP=N (training/workload.py).
"""
from __future__ import annotations

import itertools
import json
import math
import tempfile

import numpy as np

from acerag_megatron import IGNORE_INDEX
from acerag_megatron.data.finetune import FinetuneSample, build_finetune_sample
from acerag_megatron.data.indices import chunk_indices
from acerag_megatron.data.window import build_window_sample
from acerag_megatron.models.arch import ModelArch
from acerag_megatron.training import step_profile
from acerag_megatron.training.collate import predicted_tokens, window_packed_tokens

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

    def __init__(self, seed: int = 0, candidates=(1, 2, 4, 8)):
        self._cycle = itertools.cycle(list(candidates))
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


def pretrain_sample(vocab: int, seq_len: int, window: int = 1024, encoder_max_length: int = 4096,
                    comp_candidates=(1, 2, 4, 8)):
    tokens = np.random.default_rng(0).integers(3, vocab, size=seq_len)
    return build_window_sample(tokens, window=window, encoder_max_length=encoder_max_length,
                               comp_candidates=list(comp_candidates), method="random",
                               rng=_CycledRatios(candidates=comp_candidates))


def finetune_sample(vocab: int, context: int = 3584, ratio: int = 4, lm_tokens: int = 1424):
    rng = np.random.default_rng(0)
    chunk = np.concatenate([[1], rng.integers(3, vocab, size=context)])
    idx = np.asarray(chunk_indices(len(chunk), ratio, 0, "random", rng), dtype=np.int64)
    other = lm_tokens - len(idx)
    head, tail = rng.integers(3, vocab, size=other // 4), rng.integers(3, vocab, size=other - other // 4)
    ids = np.concatenate([head, np.full(len(idx), 100), tail])
    labels = np.full(len(ids), IGNORE_INDEX)
    labels[-len(tail) // 2:] = ids[-len(tail) // 2:]
    return FinetuneSample(input_ids=ids, labels=labels, placeholder_start=len(head), encoder_chunks=[chunk],
                          encoder_indices=[idx], ratio=ratio)


def loop_lm_tokens(sample) -> int:
    return sum(mu + (e - s) for mu, (s, e) in zip(sample.memory_lengths, sample.segments[1:]))


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
        estimate = trainer.memory_estimate(mb.inputs.lm_input_ids.numel(), mb.inputs.enc_input_ids.numel(),
                                           predicted_tokens(mb))
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
        out.update(seq_len=seq_len, lm_tokens_packed=window_packed_tokens(sample), lm_tokens_loop=loop_lm_tokens(sample),
                   ratios=sample.ratios)
    if not math.isfinite(out["loss"]):
        out["warning"] = "non-finite loss"
    return out


def to_json(result: dict) -> str:
    return json.dumps(result, indent=1)


# ---------------------------------------------------------------------------- workload
def finetune_sample_of_length(vocab: int, length: int, ratio: int, lm_max_length: int, encoder_max_length: int,
                              seed: int = 0):
    """A LongAlpaca-shaped conversation of `length` stored tokens (a short head and question, an
    answer of up to 256 tokens, the context the rest), truncated and compressed at `ratio` by
    the data layer's own builder."""
    rng = np.random.default_rng(seed)
    head_n, prompt_n, answer_n = min(64, length // 8), min(64, length // 8), min(256, length // 4)
    context_n = max(length - head_n - prompt_n - answer_n, 1)
    head, context, prompt, answer = (rng.integers(3, vocab, size=n) for n in (head_n, context_n, prompt_n, answer_n))
    return build_finetune_sample(head, context, np.concatenate([prompt, answer]), prompt_n, ratio=ratio,
                                 lm_max_length=lm_max_length, encoder_max_length=encoder_max_length, bos_id=1,
                                 instruction_ids=[], method="random", rng=rng)


class ScheduledDataset:
    """Hands out a fixed sequence of samples whatever index is asked for: the benchmark times
    lengths one after another, so the trainer's shuffled sampler must not pick them. The trainer
    gets samples one at a time in step order (its collator thread runs one step ahead, never
    two), so the sequence is the step order. The schedule is set after the trainer is built,
    when its resolved recompute choice tells which lengths fit."""

    def __init__(self, n: int = 1 << 20):
        self.n, self.schedule, self._next = n, [], 0

    def __len__(self):
        return self.n

    def get(self, index: int, epoch: int):
        sample = self.schedule[min(self._next, len(self.schedule) - 1)]
        self._next += 1
        return sample

    def describe(self) -> str:
        return "benchmark samples at representative lengths"


def _microbatch_counts(sample, args) -> tuple[int, int, int]:
    """(LM tokens, encoder tokens, predicted tokens) of one micro-batch holding `sample`."""
    from acerag_megatron.training.collate import collate_finetune, collate_window, collate_window_packed

    if args.window_mode:
        mb = (collate_window_packed if args.window_impl == "packed" else collate_window)(sample, 0)
    else:
        mb = collate_finetune([sample] * args.per_device_train_batch_size, 0)
    return int(mb.inputs.lm_input_ids.numel()), int(mb.inputs.enc_input_ids.numel()), predicted_tokens(mb)


def run_workload(model: str, mode: str, lengths: np.ndarray, source: str, min_length: int, max_length: int,
                 steps: int, warmup: int, extra_args: list[str], *, strata: int = 6, dp_sizes=(8,),
                 seed: int = 42, stage_extra=()) -> dict:
    """Time the real Trainer step at representative lengths of `lengths` (one trainer, the
    lengths in turn), then project the distribution's figures at each DP size in dp_sizes with
    and without --group_by_length by simulating the trainer's sampler over `lengths`."""
    import torch
    import torch.distributed as dist

    from acerag_megatron.parallel import destroy_parallel
    from acerag_megatron.training import workload
    from acerag_megatron.training.arguments import parse_args
    from acerag_megatron.training.recompute_choice import HEADROOM
    from acerag_megatron.training.step_cost import finetune_cost, window_cost
    from acerag_megatron.training.trainer import Trainer

    arch = ModelArch.from_config_dict(dict(SHAPES[model]), source=model)
    pretrain = mode == "pretrain"
    mid, extremes = workload.representative_lengths(lengths, strata)
    points = sorted(set(mid) | set(extremes))
    with tempfile.TemporaryDirectory() as out:
        args = parse_args(["--language_model_name_or_path", model, "--data_files", "synthetic", "--output_dir", out,
                           "--window_mode", str(pretrain), "--encoder_num_hidden_layers",
                           "8" if model != "tiny" else "2", "--window", "1024" if model != "tiny" else "256",
                           "--min_length", str(min_length), "--max_length", str(max_length),
                           "--save_strategy", "no", "--resume_from_checkpoint", "none", "--learning_rate", "1e-5",
                           "--max_steps", str(1 << 30), *extra_args])
        ratios = list(args.comp_candidates)
        if pretrain:
            def build(n):
                return [pretrain_sample(arch.vocab_size, n, args.window, args.encoder_max_length, ratios)]
        else:
            def build(n):  # one step per ratio: a length's time is the mean over the ratios drawn
                return [finetune_sample_of_length(arch.vocab_size, n, r, args.lm_max_length, args.encoder_max_length)
                        for r in ratios]
        samples = {n: build(n) for n in points}
        dataset = ScheduledDataset()
        trainer = Trainer(args, dataset=dataset, archs=(arch, arch), load_weights=False)
        share = trainer.global_batch // trainer.dp
        cuda = trainer.device.device == "cuda"
        capacity = torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory / 2**30 if cuda else None
        estimates = {n: max(trainer.memory_estimate(*_microbatch_counts(smp, args)).total for smp in samples[n])
                     for n in points}
        fits = {n: capacity is None or estimates[n] <= HEADROOM * capacity for n in points}
        # A length that cannot run makes the distribution's figures meaningless: time nothing.
        timed = points if all(fits.values()) else []
        per_point = steps if pretrain else len(ratios) * math.ceil(steps / len(ratios))
        # The first length warms up (compilation, allocator); every length then gets one untimed
        # step, since a new shape may build new kernels or masks.
        plan = [(timed[len(timed) // 2], False)] * warmup if timed else []
        for n in timed:
            plan += [(n, False)] + [(n, True)] * per_point
        # A step's samples are consecutive schedule entries; a finetune length cycles its ratios.
        cycle = {n: 0 for n in timed}
        for n, _ in plan:
            dataset.schedule += [samples[n][cycle[n] % len(samples[n])]] * share
            cycle[n] += 1
        # The step count is known only now (the fit check needs the resolved recompute choice);
        # the trainer collates a step ahead only while another one is due.
        trainer.total_steps = len(plan)
        measured, peaks = {n: [] for n in timed}, {}
        for n, keep in plan:
            if keep and cuda and not measured[n]:
                torch.cuda.reset_peak_memory_stats()
            r = trainer.train_step()
            if keep:
                measured[n].append(r)
                peaks[n] = trainer.memory_gib()
        device = trainer.device.describe()
        world = dist.get_world_size()
        recompute = {"recompute_encoder": args.recompute_encoder, "recompute_lm": args.recompute_lm,
                     "recompute_reason": getattr(args, "recompute_reason", None)}
        destroy_parallel(process_group=True)
    layers = args.encoder_num_hidden_layers

    def cost(n):
        if pretrain:
            return window_cost(int(n), args.window, ratios, arch, arch, layers)
        return finetune_cost(int(n), args.lm_max_length, arch, arch, layers)

    rows = []
    for n in points:
        row = {"length": n, "cost_tflop": cost(n) / 1e12, "memory_estimate_gib": estimates[n], "fits": fits[n]}
        if measured.get(n):
            rs = measured[n]
            t = float(np.mean([r["step_time"] for r in rs]))
            row.update(step_time_s=t, tokens_per_s=n * share / t, samples_per_s=share / t,
                       mfu=float(np.mean([r["mfu"] for r in rs])),
                       tflops_per_gpu=float(np.mean([r["tflops_per_gpu"] for r in rs])), steps_timed=len(rs),
                       context_tokens_per_s=float(np.mean([r["context_tokens_per_s"] for r in rs])),
                       lm_tokens_per_s=float(np.mean([r["lm_tokens_per_s"] for r in rs])),
                       peak_memory_gib=peaks[n], loss=rs[-1]["loss"])
        rows.append(row)
    result = {"model": model, "mode": mode, "world_size": world, "device": device, "benchmark": "workload",
              "lengths": {"source": source, "min_length": min_length, "max_length": max_length,
                          **workload.describe_lengths(lengths)},
              "tokens": "stored sample tokens (the unit of the length distribution)",
              "samples_per_rank_step": share, "window_impl": args.window_impl if pretrain else None,
              **recompute, "points": rows}
    unfit = [n for n in points if not fits[n]]
    if unfit:
        result["warning"] = (f"lengths {unfit} exceed this GPU's memory by the estimate with this recompute choice "
                             "(pass --gradient_checkpointing after --); nothing timed")
        return result
    # DP=1 measured: each stratified length stands for the same share of the samples.
    by_length = {r["length"]: r for r in rows}
    t_mid = sum(by_length[n]["step_time_s"] for n in mid)
    flops_mid = sum(by_length[n]["tflops_per_gpu"] * by_length[n]["step_time_s"] for n in mid)
    result["dp1_measured"] = {"tokens_per_s_per_gpu": sum(mid) * share / t_mid,
                              "samples_per_s": len(mid) * share / t_mid,
                              "mfu": flops_mid / t_mid / args.peak_tflops, "lengths": mid}
    step_time = workload.StepTime([cost(n) for n in points], [by_length[n]["step_time_s"] for n in points])
    unique = np.unique(lengths)
    costs = np.array([cost(n) for n in unique])[np.searchsorted(unique, lengths)]
    projection = []
    for dp in (1, *dp_sizes):
        for grouped in ((False,) if dp == 1 else (False, True)):
            try:
                p = workload.simulate(costs, lengths, step_time, dp=dp, share=share, seed=seed, grouped=grouped,
                                      megabatch=args.group_by_length_megabatch, peak_tflops=args.peak_tflops)
            except ValueError as e:  # fewer samples than one global batch at this DP size
                raise SystemExit(f"error: --dp {dp}: {e}") from None
            p["stages"] = workload.stage_wall_times(mode, p["step_time_s"], dp * share, stage_extra)
            projection.append(p)
    result["projection"] = projection
    result["time_model"] = ("step seconds piecewise linear in the step's model FLOPs between the measured lengths; "
                            "gradient all-reduce and optimizer sharding not modelled")
    return result

