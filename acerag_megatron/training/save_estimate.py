"""How long one checkpoint save should take, printed at start-up.

A pre-emption save has to finish inside the scheduler's grace (Slurm's KillWait, 30 s unless
the cluster sets it; torchrun's --shutdown-timeout, 30 s). The size is the latest checkpoint's
when there is one, else counted from the encoder's parameters; the bandwidth is measured by
rank 0 writing and fsyncing a probe file in the output folder. All ranks write their shards at
once in a real save, so on a parallel file system it is usually faster than this.
"""
from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import torch
import torch.distributed as dist
from megatron.core import parallel_state as ps

from acerag_megatron.training.memory_estimate import size

PROBE_MIB = 64
# Per encoder parameter besides the saved weights: fp32 main copy + two Adam moments
# (distributed optimizer, bf16 training; fp32 training keeps no separate main copy), and the
# bf16 HF export.
OPTIMIZER_BYTES = {True: 12, False: 8}
EXPORT_BYTES = 2


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def counted_bytes(encoder, bf16: bool, device: str) -> int:
    """Collective over all ranks: bytes of one checkpoint counted from the encoder parameters."""
    params = list(encoder.parameters()) if encoder is not None else []
    counts = torch.tensor([sum(p.numel() for p in params), sum(p.numel() * p.element_size() for p in params)],
                          dtype=torch.float64, device=device)
    # One data-parallel replica's model-parallel ranks hold every encoder parameter once
    # (norm weights are replicated over TP and counted per rank: a rounding error).
    dist.all_reduce(counts, group=ps.get_model_parallel_group())
    numel, weight_bytes = (float(x) for x in counts.cpu())
    return int(weight_bytes + numel * (OPTIMIZER_BYTES[bool(bf16)] + EXPORT_BYTES))


def measure_write_bandwidth(folder: Path, mib: int = PROBE_MIB) -> float:
    """Bytes/s of writing and fsyncing `mib` MiB of incompressible data in `folder`."""
    # Named as atomic writes name their temporaries: the start-up cleanup of killed runs knows it.
    probe = folder / f".write-probe.tmp-{socket.gethostname()}-{os.getpid()}"
    block = os.urandom(2**20)
    t0 = time.perf_counter()
    try:
        with open(probe, "wb") as f:
            for _ in range(mib):
                f.write(block)
            f.flush()
            os.fsync(f.fileno())
        return mib * 2**20 / max(time.perf_counter() - t0, 1e-6)
    finally:
        probe.unlink(missing_ok=True)


def save_time_line(nbytes: int, source: str, bandwidth: float) -> str:
    seconds = nbytes / bandwidth
    # Below a second the fixed cost of a save (planning, barriers, the HF export) dominates.
    took = f"~{seconds:.0f} s" if seconds >= 1 else "under 1 s"
    return (f"{took} per checkpoint: {size(nbytes / 2**30)} ({source}) at "
            f"{bandwidth / 2**20:.0f} MiB/s (measured: {PROBE_MIB} MiB written and fsynced to --output_dir by "
            "rank 0); a SIGTERM/SIGUSR1 save must finish within the scheduler's grace")
