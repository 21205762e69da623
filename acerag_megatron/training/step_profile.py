"""Where a training step's time goes: torch.profiler over a few steps, summed by kind of work.

Kernel names are matched by substring (cuBLAS/CUTLASS GEMMs, flash/flex attention kernels,
NCCL, the optimizer's foreach/fused Adam); everything else is elementwise or other work. On a
GPU the times are the kernels' own device times, read off the kernel events alone: the operator
that launched a kernel reports the same time again as its own device time, and a compiled
Triton kernel appears once as a launch record and once as the kernel. The share of the step's
wall time the GPU spent in kernels (`gpu_busy`) shows how much is left to launch overhead or
host work. On CPU the times are the operators' own CPU times.
"""
from __future__ import annotations

import time
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


def own_time_us(evt, cuda: bool) -> float:
    """An averaged profiler event's own time: on a GPU a kernel's device time (launching
    operators and GPU-side annotations count 0, their kernels are counted themselves)."""
    if not cuda:
        return evt.self_cpu_time_total
    kernel = evt.device_type == torch.autograd.DeviceType.CUDA and not getattr(evt, "is_user_annotation", False)
    return evt.self_device_time_total if kernel else 0


def profile_steps(step_fn, steps: int, cuda: bool, top: int = 30) -> dict:
    """Run `step_fn` `steps` times under the profiler; return totals per category and top ops.

    Returns:
        {"device_time": bool, "total_ms_per_step", "wall_ms_per_step", "gpu_busy" (None on CPU),
         "by_category": {name: {"ms_per_step", "share"}},
         "top_ops": [{"name", "category", "ms_per_step", "share", "calls_per_step"}]}
    """
    activities = [torch.profiler.ProfilerActivity.CPU]
    if cuda:
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(steps):
            step_fn()
        if cuda:
            torch.cuda.synchronize()
        wall_ms = (time.perf_counter() - start) * 1000.0 / steps
    rows = []
    for evt in prof.key_averages():
        us = own_time_us(evt, cuda)
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
        "wall_ms_per_step": wall_ms,
        "gpu_busy": total / wall_ms if cuda else None,
        "by_category": {k: {"ms_per_step": v, "share": v / total} for k, v in sorted(by_cat.items(), key=lambda kv: -kv[1])},
        "top_ops": [{"name": name[:120], "category": category(name), "ms_per_step": ms, "share": ms / total,
                     "calls_per_step": calls} for name, ms, calls in rows[:top]],
    }
