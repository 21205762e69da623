"""RMSNorm for the local layer spec that works with sequence parallelism."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from acerag_megatron.models.kernels import compiled


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    return F.rms_norm(x, (x.shape[-1],), weight, eps)


class RMSNorm(torch.nn.RMSNorm):
    """torch RMSNorm built from a Megatron config.

    Under sequence parallelism each TP rank normalises a different slice of the sequence, so
    the weight gradients are partial sums. Tagging the weight with `sequence_parallel` makes
    Megatron's finalize_model_grads all-reduce them over the TP group (Megatron's own
    WrappedTorchNorm refuses sequence parallelism instead).

    With `compiled_kernels` the norm is one compiled kernel per direction that saves only its
    input and the per-row scale, whichever way torch dispatches rms_norm on the device.
    """

    def __init__(self, config, hidden_size: int, eps: float = 1e-5, compiled_kernels: bool = False, **_unused):
        device = "cpu" if config.use_cpu_initialization else torch.cuda.current_device()
        super().__init__(hidden_size, eps=eps, dtype=config.params_dtype, device=device)
        self.compiled_kernels = compiled_kernels
        for param in self.parameters():
            param.sequence_parallel = config.sequence_parallel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.untyped_storage().nbytes() > x.numel() * x.element_size():
            # Megatron hands the q/k norms slices of the fused QKV output; saving a slice for the
            # backward would keep the whole buffer alive, so the norm saves its own copy.
            x = x.clone(memory_format=torch.contiguous_format)
        if not self.compiled_kernels:
            return super().forward(x)
        return compiled(rms_norm)(x, self.weight, self.eps)
