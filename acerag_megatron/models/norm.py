"""RMSNorm for the local layer spec that works with sequence parallelism."""
from __future__ import annotations

import torch


class RMSNorm(torch.nn.RMSNorm):
    """torch RMSNorm built from a Megatron config.

    Under sequence parallelism each TP rank normalises a different slice of the sequence, so
    the weight gradients are partial sums. Tagging the weight with `sequence_parallel` makes
    Megatron's finalize_model_grads all-reduce them over the TP group (Megatron's own
    WrappedTorchNorm refuses sequence parallelism instead).
    """

    def __init__(self, config, hidden_size: int, eps: float = 1e-5, **_unused):
        device = "cpu" if config.use_cpu_initialization else torch.cuda.current_device()
        super().__init__(hidden_size, eps=eps, dtype=config.params_dtype, device=device)
        for param in self.parameters():
            param.sequence_parallel = config.sequence_parallel
