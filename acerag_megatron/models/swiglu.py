"""SwiGLU that keeps only its input for the backward pass.

Autograd through `silu(a) * b` saves the fc1 output (a, b) and the silu output: 1.5x the fc1
activation per layer. Recomputing silu in the backward keeps only the fc1 output, a third less
MLP activation memory (about 7.7 GB for the frozen Llama-2-7B at 10,880 tokens), with the same
gradient formula autograd uses.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from megatron.core.transformer.mlp import MLP


class _SwiGLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        a, b = torch.chunk(x, 2, dim=-1)
        return F.silu(a) * b

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        a, b = torch.chunk(x, 2, dim=-1)
        sig = torch.sigmoid(a)
        # d silu(a) / da = sigmoid(a) * (1 + a * (1 - sigmoid(a))), as torch's silu backward.
        grad_a = grad * b * (sig * (1 + a * (1 - sig)))
        grad_b = grad * (a * sig)
        return torch.cat([grad_a, grad_b], dim=-1)


def swiglu(x: torch.Tensor) -> torch.Tensor:
    """silu(first half) * second half of the last dimension; saves only x for backward."""
    return _SwiGLU.apply(x)


class SwiGLUMLP(MLP):
    """Megatron's MLP (same submodules, weights and sharded state) with the lean SwiGLU."""

    def forward(self, hidden_states, per_token_scale=None, **kwargs):
        if per_token_scale is not None:
            raise ValueError("SwiGLUMLP does not support per-token scales (MoE experts)")
        inter, bias = self.linear_fc1(hidden_states)
        if bias is not None:
            inter = inter + bias
        return self.linear_fc2(swiglu(inter))
