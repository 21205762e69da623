"""The real workload's figures from a few measured steps: a length distribution (drawn, or the
user's own preprocessed data), step time as a function of the step cost model, and the
data-parallel projection with and without --group_by_length.

The seed trains one sample per GPU per step on 8 GPUs, so every step waits for the rank holding
the costliest sample. One GPU cannot measure that wait, but it can measure what a step of each
cost takes; the wait then follows from simulating the trainer's own sampler over the
distribution. Gradient all-reduce and the distributed optimizer's sharding are not modelled
(the encoder's reduce overlaps its backward; sharding only shortens the optimizer step).
"""
from __future__ import annotations

from itertools import islice

import numpy as np

from acerag_megatron.data.sampler import DistributedBatchSampler

# Named distributions: (median, sigma) of a log-normal, cut to (min_length, max_length).
PRESETS = {
    # A log-normal model of the seed's RedPajama documents (mean 3,372, p90 6,502 in (1024, 16000)).
    "redpajama": (2200.0, 0.8),
    # An assumption, not a measurement: LongAlpaca-12k is mostly long QA over papers and books
    # (about 8k-32k tokens); --lengths-from on the real data replaces it.
    "longalpaca": (12000.0, 0.5),
}

# The seed's stages: name and nominal sample count (METHOD.md 7).
STAGES = {"pretrain": [("pretraining", 90_000)], "finetune": [("LongAlpaca", 10_000), ("multi-task", 130_000)]}


def parse_length_dist(spec: str) -> tuple[float, float]:
    """`lognormal:MEDIAN:SIGMA` or a preset name -> (median, sigma); ValueError says why not."""
    if spec in PRESETS:
        return PRESETS[spec]
    parts = spec.split(":")
    if len(parts) != 3 or parts[0] != "lognormal":
        raise ValueError(f"{spec!r}: expected lognormal:MEDIAN:SIGMA or one of {', '.join(PRESETS)}")
    try:
        median, sigma = float(parts[1]), float(parts[2])
    except ValueError:
        raise ValueError(f"{spec!r}: MEDIAN and SIGMA must be numbers") from None
    if median <= 0 or sigma < 0:
        raise ValueError(f"{spec!r}: MEDIAN must be > 0 and SIGMA >= 0")
    return median, sigma


def draw_lengths(spec: str, n: int, min_length: int, max_length: int, seed: int = 0) -> np.ndarray:
    """n lengths of the distribution kept as the dataset keeps them: min_length < length < max_length."""
    median, sigma = parse_length_dist(spec)
    if max_length - min_length < 2:
        raise ValueError(f"no integer length lies strictly between {min_length} and {max_length}")
    rng = np.random.default_rng(seed)
    out = np.zeros(0, dtype=np.int64)
    for _ in range(1000):
        draw = np.exp(np.log(median) + sigma * rng.standard_normal(max(2 * n, 1024))).astype(np.int64)
        out = np.concatenate([out, draw[(draw > min_length) & (draw < max_length)]])
        if len(out) >= n:
            return out[:n]
    raise ValueError(f"{spec!r} puts almost nothing in ({min_length}, {max_length})")


def lengths_from_prefix(prefix: str, window_mode: bool, min_length: int, max_length: int, window: int) -> np.ndarray:
    """Sample lengths of a preprocessed prefix after the trainer's own length filter (the index
    only; no token is read). Raises DataError for a missing or mismatched prefix."""
    from acerag_megatron.data.dataset import CompressiveDataset, SampleConfig
    from acerag_megatron.data.preprocess import read_manifest

    read_manifest(prefix)  # a missing prefix fails here, before megatron-core is imported
    config = SampleConfig(window_mode=window_mode, window=window, min_length=min_length, max_length=max_length)
    return np.asarray(CompressiveDataset([prefix], config, seed=0).lengths, dtype=np.int64)


def representative_lengths(lengths: np.ndarray, strata: int) -> tuple[list[int], list[int]]:
    """(stratified, extremes): the length at the middle quantile of each of `strata` equal-count
    strata (each stands for 1/strata of the samples, so their mean time estimates the distribution's),
    and the shortest and longest lengths, which bound the step-time curve the projection reads."""
    qs = (np.arange(strata) + 0.5) / strata
    mid = [int(x) for x in np.quantile(lengths, qs, method="nearest")]
    return mid, [int(lengths.min()), int(lengths.max())]


class StepTime:
    """Step time as a function of a rank's step cost (model FLOPs): piecewise linear through
    the measured (cost, seconds) points, continued linearly beyond the outer ones. A rank with
    several samples costs their sum (one step's fixed overhead, as measured)."""

    def __init__(self, costs, seconds):
        order = np.argsort(costs)
        self.x = np.asarray(costs, dtype=np.float64)[order]
        self.y = np.asarray(seconds, dtype=np.float64)[order]
        if len(self.x) < 2 or np.ptp(self.x) == 0:
            raise ValueError("step-time model needs at least two measured points of different cost")

    def __call__(self, cost) -> np.ndarray:
        c = np.asarray(cost, dtype=np.float64)
        t = np.interp(c, self.x, self.y)
        lo = (self.y[1] - self.y[0]) / (self.x[1] - self.x[0])
        hi = (self.y[-1] - self.y[-2]) / (self.x[-1] - self.x[-2])
        t = np.where(c < self.x[0], self.y[0] + lo * (c - self.x[0]), t)
        t = np.where(c > self.x[-1], self.y[-1] + hi * (c - self.x[-1]), t)
        # Extrapolating below the cheapest point must not give a non-positive time.
        return np.maximum(t, 1e-6)


def simulate(costs: np.ndarray, tokens: np.ndarray, step_time: StepTime, *, dp: int, share: int, seed: int,
             grouped: bool, megabatch: int, peak_tflops: float | None = None) -> dict:
    """One epoch of the trainer's sampler at `dp` ranks taking `share` samples each per step:
    each step lasts as long as its slowest rank's modelled time."""
    ranks = [DistributedBatchSampler(len(costs), dp_rank=r, dp_size=dp, micro_batch_size=share, seed=seed,
                                     costs=costs if grouped else None, megabatch=megabatch) for r in range(dp)]
    steps = ranks[0].steps_per_epoch
    useful = slowest = busy = wall = 0.0
    n_tokens = 0
    for per_rank in zip(*(islice(iter(s), steps) for s in ranks)):
        loads = np.array([costs[idx].sum() for _, idx in per_rank])
        times = step_time(loads)
        useful, slowest = useful + loads.sum(), slowest + loads.max()
        busy, wall = busy + times.sum(), wall + times.max()
        n_tokens += int(sum(tokens[idx].sum() for _, idx in per_rank))
    samples = steps * dp * share
    out = {"dp": dp, "grouped": grouped, "steps": steps, "samples": samples,
           "tokens_per_s_per_gpu": float(n_tokens / wall / dp), "samples_per_s": float(samples / wall),
           "step_time_s": float(wall / steps),
           # What the trainer prints per step: cost of all ranks over dp x the costliest rank.
           "dp_efficiency": float(useful / (dp * slowest)),
           # The same in modelled seconds (a step's fixed overhead counts as work here).
           "dp_time_efficiency": float(busy / (dp * wall))}
    if peak_tflops:
        out["mfu"] = float(useful / wall / dp / 1e12 / peak_tflops)
    return out


def stage_wall_times(mode: str, step_time_s: float, global_batch: int, extra: list[tuple[str, int]] = ()) -> list:
    """Estimated hours of each seed stage (one epoch, last incomplete global batch dropped)."""
    out = []
    for name, samples in [*STAGES[mode], *extra]:
        steps = samples // global_batch
        out.append({"stage": name, "samples": samples, "steps": steps, "wall_time_h": steps * step_time_s / 3600})
    return out


def describe_lengths(lengths: np.ndarray) -> dict:
    return {"samples": int(len(lengths)), "mean": float(lengths.mean()), "median": float(np.median(lengths)),
            "p90": float(np.quantile(lengths, 0.9)), "min": int(lengths.min()), "max": int(lengths.max())}


def table(result: dict) -> str:
    """A run_workload result, readable: DP=1 measured, then one line per DP size and order."""
    lines = [f"{result['model']} {result['mode']} on {result['lengths']['source']} "
             f"(mean {result['lengths']['mean']:.0f} tokens); recompute encoder {result['recompute_encoder']}, "
             f"LM {result['recompute_lm']}",
             f"  DP=1 measured: {result['dp1_measured']['tokens_per_s_per_gpu']:,.0f} tokens/s, "
             f"{result['dp1_measured']['samples_per_s']:.3g} samples/s, MFU {result['dp1_measured']['mfu']:.1%}"]
    for p in result["projection"]:
        order = "grouped" if p["grouped"] else "random " if p["dp"] > 1 else "modeled"
        stages = ", ".join(f"{s['stage']} {s['wall_time_h']:.3g} h" for s in p["stages"])
        lines.append(f"  DP={p['dp']:<3d} {order} {p['tokens_per_s_per_gpu']:,.0f} tokens/s/GPU, "
                     f"{p['samples_per_s']:.3g} samples/s, DP efficiency {p['dp_efficiency']:.3f}; {stages}")
    return "\n".join(lines)
