"""Start-up shared by the converter commands: device, process group, parallel layout."""
from __future__ import annotations

import argparse
import os

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def add_parallel_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tp", type=int, default=1, help="tensor-parallel size (world size = tp * pp)")
    parser.add_argument("--pp", type=int, default=1, help="pipeline-parallel size")


def start(args):
    """Resolve the device and initialise parallel state; returns the DeviceInfo."""
    import torch.distributed as dist

    from acerag_megatron.device import resolve_device
    from acerag_megatron.parallel import initialize_parallel

    import transformers

    transformers.logging.set_verbosity_error()
    device = resolve_device()
    initialize_parallel(args.tp, args.pp, seed=0, device=device)
    if dist.get_world_size() != args.tp * args.pp:
        raise SystemExit(f"error: world size {dist.get_world_size()} != --tp {args.tp} x --pp {args.pp}; "
                         f"launch with torchrun --nproc-per-node {args.tp * args.pp}")
    return device


def finish() -> None:
    from acerag_megatron.parallel import destroy_parallel

    destroy_parallel(process_group=True)
