"""Process-group and model-parallel initialisation (torchrun or a single plain process)."""
from __future__ import annotations

import os
import socket

import torch
import torch.distributed as dist

from acerag_megatron.device import DeviceInfo


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_world_size() -> int:
    """The world size initialize_parallel() works in: the existing process group's, torchrun's
    (RANK and WORLD_SIZE set), else 1; known before any process group exists."""
    if dist.is_initialized():
        return dist.get_world_size()
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        return int(os.environ["WORLD_SIZE"])
    return 1


def data_parallel_size(world: int, tp: int, pp: int) -> int:
    """Data-parallel ranks of a world split into TP x PP model-parallel groups.

    Raises:
        ValueError: when the world size is not divisible by tp * pp.
    """
    if world % (tp * pp):
        raise ValueError(f"world size {world} is not divisible by tensor ({tp}) x pipeline ({pp}) parallel size")
    return world // (tp * pp)


def initialize_parallel(tp: int, pp: int, seed: int, device: DeviceInfo) -> None:
    """Initialise torch.distributed (if needed), Megatron's parallel state and the RNGs.

    Under torchrun the process group comes from the environment; a plain single process gets
    a 1-rank group on a free local port. Calling it again after destroy_parallel() re-initialises
    the model-parallel layout inside the same process group.

    Args:
        tp: tensor-model-parallel size.
        pp: pipeline-model-parallel size.
        seed: base seed; Megatron derives the per-TP-rank seeds from it.
        device: result of resolve_device().

    Raises:
        ValueError: when the world size is not divisible by tp * pp.
    """
    from megatron.core import parallel_state
    from megatron.core.tensor_parallel.random import model_parallel_cuda_manual_seed

    if not dist.is_initialized():
        kwargs = {"backend": device.dist_backend}
        if device.device == "cuda":
            local_rank = int(os.environ.get("LOCAL_RANK", "0"))
            torch.cuda.set_device(local_rank)
            kwargs["device_id"] = torch.device("cuda", local_rank)  # binds NCCL to this GPU up front
        if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
            dist.init_process_group(**kwargs)
        else:
            dist.init_process_group(**kwargs, rank=0, world_size=1, init_method=f"tcp://127.0.0.1:{_free_port()}")
    data_parallel_size(dist.get_world_size(), tp, pp)  # refuses a world that TP x PP does not divide
    if parallel_state.model_parallel_is_initialized():
        parallel_state.destroy_model_parallel()
    parallel_state.initialize_model_parallel(tensor_model_parallel_size=tp, pipeline_model_parallel_size=pp)
    model_parallel_cuda_manual_seed(seed, force_reset_rng=True)
    torch.manual_seed(seed)


def destroy_parallel(process_group: bool = False) -> None:
    """Tear down Megatron's parallel state, and the process group too when asked."""
    from megatron.core import parallel_state

    parallel_state.destroy_model_parallel()
    if process_group and dist.is_initialized():
        dist.destroy_process_group()
