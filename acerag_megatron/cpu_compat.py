"""Compatibility patches that let megatron-core 0.16.1 run on a CPU-only torch build.

Megatron hard-codes CUDA in a few places (device strings, the CUDA RNG tracker, type names,
synchronize). These patches (S1-S4, S6 of the feasibility study) remap them to CPU. They are
applied once per process, before any model is built, and only when no GPU is used: by
process_setup.prepare_process(), the one caller.
"""
from __future__ import annotations

import logging

import torch
from torch.overrides import TorchFunctionMode

SUPPORTED_MEGATRON_CORE = "0.16.1"

_applied = False
_mode: TorchFunctionMode | None = None


def _is_cuda(device) -> bool:
    return (isinstance(device, str) and device.startswith("cuda")) or (
        isinstance(device, torch.device) and device.type == "cuda")


class _CudaToCpu(TorchFunctionMode):
    """Rewrites `device='cuda'`, `Tensor.cuda()` and `Tensor.to('cuda')` to CPU (S3).

    Megatron creates tensors with the literal device "cuda" in its schedules, optimizer,
    grad clipping and default causal mask.
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if "device" in kwargs and _is_cuda(kwargs["device"]):
            kwargs = {**kwargs, "device": "cpu"}
        if func is torch.Tensor.cuda:
            return args[0]
        if func is torch.Tensor.to and len(args) > 1 and _is_cuda(args[1]):
            args = (args[0], "cpu", *args[2:])
        return func(*args, **kwargs)


def _patch_rng_tracker() -> None:
    """Keep the model-parallel RNG tracker semantics with CPU generator states (S2)."""
    from megatron.core.tensor_parallel import random as mrandom

    mrandom._get_cuda_rng_state = lambda *a, **k: torch.get_rng_state()
    mrandom._set_cuda_rng_state = lambda state, *a, **k: torch.set_rng_state(state)

    def add(self, name, seed):
        self._is_initialized = True
        if seed in self.seeds_:
            raise Exception(f"seed {seed} already exists")
        self.seeds_.add(seed)
        if name in self.states_:
            raise Exception(f"rng state {name} already exists")
        self.states_[name] = torch.Generator().manual_seed(seed).get_state()

    mrandom.CudaRNGStatesTracker.add = add
    # fork() swaps the CPU generator, then warns that the CPU state changed; expected here.
    logging.getLogger(mrandom.__name__).setLevel(logging.ERROR)


def _patch_tensor_type() -> None:
    """Report CPU tensors with CUDA type names, which Megatron's optimizers assert (S6)."""
    original = torch.Tensor.type

    def tensor_type(self, dtype=None, non_blocking=False, **kwargs):
        if dtype is None:
            name = original(self)
            if self.device.type == "cpu" and not name.startswith("torch.cuda."):
                return name.replace("torch.", "torch.cuda.", 1)
            return name
        return original(self, dtype, non_blocking, **kwargs)

    torch.Tensor.type = tensor_type


def apply_cpu_compat() -> None:
    """Apply the CPU patches once per process (idempotent).

    Raises:
        RuntimeError: if the installed megatron-core is not the version these patches target.
    """
    global _applied, _mode
    if _applied:
        return
    from megatron.core import package_info

    if package_info.__version__ != SUPPORTED_MEGATRON_CORE:
        raise RuntimeError(
            f"CPU compatibility patches target megatron-core {SUPPORTED_MEGATRON_CORE}, "
            f"found {package_info.__version__}; re-validate them before use")
    torch.cuda.current_device = lambda: "cpu"  # S1: factory calls pass device=current_device()
    torch.cuda.synchronize = lambda *a, **k: None  # S4: p2p communication and checkpoint writes
    _patch_rng_tracker()
    _patch_tensor_type()
    _mode = _CudaToCpu()
    _mode.__enter__()  # process-wide for the main thread; stays entered for the process lifetime
    _applied = True

