"""Where a training step's time goes: torch.profiler over a few steps, summed by kind of work.

Kernel names are matched by substring (cuBLAS/CUTLASS GEMMs, flash/flex attention kernels,
NCCL, the optimizer's foreach/fused Adam); everything else is elementwise or other work. On a
GPU the times are device (kernel) times, on CPU the operators' own CPU times.
"""
from __future__ import annotations

from collections import defaultdict

import torch

CATEGORIES = (  # first match wins; order matters ("flash" before "gemm", "adam" before "foreach")
    ("attention", ("flash", "flex", "attention", "fmha", "sdpa", "triton_tem_fused")),
    ("communication", ("nccl", "all_reduce", "allreduce", "all_gather", "allgather", "reduce_scatter",
                       "reducescatter", "gloo", "broadcast")),
    ("optimizer", ("adam", "_foreach", "multi_tensor", "l2norm")),
    ("gemm", ("gemm", "cutlass", "xmma", "aten::mm", "aten::addmm", "aten::bmm", "aten::matmul", "cublas",
              "nvjet", "wgmma")),
)


def category(name: str) -> str:
    lower = name.lower()
    for label, needles in CATEGORIES:
        if any(n in lower for n in needles):
            return label
    return "elementwise/other"


def profile_steps(step_fn, steps: int, cuda: bool, top: int = 15) -> dict:
    """Run `step_fn` `steps` times under the profiler; return totals per category and top ops.

    Returns:
        {"device_time": bool, "total_ms_per_step", "by_category": {name: {"ms_per_step", "share"}},
         "top_ops": [{"name", "category", "ms_per_step", "share", "calls_per_step"}]}
    """
    activities = [torch.profiler.ProfilerActivity.CPU]
    if cuda:
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        for _ in range(steps):
            step_fn()
        if cuda:
            torch.cuda.synchronize()
    rows = []
    for evt in prof.key_averages():
        us = (getattr(evt, "self_device_time_total", None) or getattr(evt, "self_cuda_time_total", 0)) if cuda \
            else evt.self_cpu_time_total
        if us > 0:
            rows.append((evt.key, us / 1000.0 / steps, evt.count / steps))
    total = sum(ms for _, ms, _ in rows) or 1.0
    by_cat = defaultdict(float)
    for name, ms, _ in rows:
        by_cat[category(name)] += ms
    rows.sort(key=lambda r: -r[1])
    return {
        "device_time": cuda,
        "total_ms_per_step": total,
        "by_category": {k: {"ms_per_step": v, "share": v / total} for k, v in sorted(by_cat.items(), key=lambda kv: -kv[1])},
        "top_ops": [{"name": name[:120], "category": category(name), "ms_per_step": ms, "share": ms / total,
                     "calls_per_step": calls} for name, ms, calls in rows[:top]],
    }
