"""One optimizer update that refuses non-finite gradients.

Megatron's optimizers detect inf/NaN gradients only through a grad scaler (fp16). Under bf16
or fp32 there is none: a finite loss with an overflowing gradient goes to clipping, whose
coefficient max_norm / inf = 0 turns every inf into NaN (inf * 0), and the update writes NaN
into the weights and Adam's moments. This runs the same sequence as Megatron's
ChainedOptimizer.step (prepare, norm, clip, update) with the norm checked before anything
changes. The norm is reduced over the optimizer's gradient-statistics group, so every rank
takes the same decision.
"""
from __future__ import annotations

import math

import torch
from megatron.core.optimizer.clip_grads import clip_grad_by_total_norm_fp32


@torch.no_grad()
def step_if_finite(optimizer) -> tuple[bool, float]:
    """Update with clipped gradients unless their norm is non-finite.

    Args:
        optimizer: a Megatron optimizer (ChainedOptimizer or a single one) whose gradients are
            ready (after the backward and DDP's gradient reduction).

    Returns:
        (updated, grad_norm): grad_norm is the norm before clipping (NaN when a grad scaler found
        an overflow); nothing changes (weights, moments, step counts) when updated is False.
    """
    if optimizer.prepare_grads():  # a grad scaler found inf/NaN (fp16 only)
        return False, float("nan")
    grad_norm = float(optimizer.get_grad_norm())
    if not math.isfinite(grad_norm):
        return False, grad_norm
    for inner in getattr(optimizer, "chained_optimizers", [optimizer]):
        if getattr(inner, "is_stub_optimizer", False) or inner.config.clip_grad <= 0.0:
            continue
        params = inner.get_parameters()
        if params:
            clip_grad_by_total_norm_fp32(params, max_norm=inner.config.clip_grad, total_norm=grad_norm,
                                         use_decoupled_grad=inner.config.use_precision_aware_optimizer_no_fp8_or_ds_fp8)
    return bool(optimizer.step_with_ready_grads()), grad_norm
