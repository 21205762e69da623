"""Fixes for resuming megatron-core 0.16.1's DistributedOptimizer on the torch-native Adam path.

Without Transformer Engine or apex (our situation on CPU and on GPU), loading optimizer state
from a distributed checkpoint breaks in two ways (S7, S8 of the feasibility study); both are
fixed here and must be applied on every device.
"""
from __future__ import annotations

import torch

_applied = False


def _fix_set_main_param_and_optimizer_states(cls) -> None:
    """S7: copy only the state keys the checkpoint provides, never 'step', under no_grad.

    The original copies into every key of the torch AdamW state including 'step' (KeyError),
    and its dp_reshardable path writes into a view of a leaf that requires grad.
    """
    original = cls._set_main_param_and_optimizer_states

    def set_states(self, model_param, tensors):
        if self.config.use_precision_aware_optimizer_no_fp8_or_ds_fp8:
            return original(self, model_param, tensors)
        group_index, group_order = self.model_param_group_index_map[model_param]
        main_param = self.optimizer.param_groups[group_index]["params"][group_order]
        targets = {"param": main_param, **self.optimizer.state[main_param]}
        with torch.no_grad():
            for key, target in targets.items():
                if key in tensors and key != "step":  # step is restored from param_groups
                    target.copy_(tensors[key])

    cls._set_main_param_and_optimizer_states = set_states


def _fix_shared_step(cls) -> None:
    """S8: give every param its own 'step' tensor after load.

    load_state_dict assigns one tensor object to every param's state; torch AdamW increments
    it in place once per param per step, which silently corrupts bias correction on resume.
    """
    original = cls.load_state_dict

    def load_state_dict(self, state_dict):
        original(self, state_dict)
        for state in self.optimizer.state.values():
            if torch.is_tensor(state.get("step")):
                state["step"] = state["step"].clone()

    cls.load_state_dict = load_state_dict


def apply_optimizer_fixes() -> None:
    """Apply S7 and S8 once per process (idempotent)."""
    global _applied
    if _applied:
        return
    from megatron.core.optimizer.distrib_optimizer import DistributedOptimizer

    _fix_set_main_param_and_optimizer_states(DistributedOptimizer)
    _fix_shared_step(DistributedOptimizer)
    _applied = True


def prime_optimizer_for_load(optimizer) -> None:
    """Create optimizer state on a fresh optimizer so its sharded_state_dict can be built for loading.

    DistributedOptimizer.sharded_state_dict(is_loading=True) asserts that Adam's 'step' exists.
    Priming performs one zero-gradient step (weight decay touches params; the load overwrites them).

    Args:
        optimizer: a Megatron optimizer (ChainedOptimizer or a single one).
    """
    for opt in getattr(optimizer, "chained_optimizers", [optimizer]):
        inner = getattr(opt, "optimizer", None)
        if hasattr(opt, "_init_optimizer_states_with_dummy_values") and inner is not None and len(inner.state) == 0:
            opt._init_optimizer_states_with_dummy_values()


def init_untouched_optimizer_state(optimizer) -> None:
    """Give every parameter that has not been updated yet the state torch's Adam/AdamW would
    create at its first update (step 0, zero moments), so a checkpoint can be saved before any
    update was taken (every step so far skipped as non-finite). The distributed optimizer's
    state_dict asserts a 'step' exists; a resume from this state updates exactly as a fresh
    optimizer does.
    """
    from torch.optim.optimizer import _get_scalar_dtype

    for opt in getattr(optimizer, "chained_optimizers", [optimizer]):
        inner = getattr(opt, "optimizer", None)
        if inner is None:
            continue
        for group in inner.param_groups:
            on_device = group.get("fused") or group.get("capturable")
            for p in group["params"]:
                if inner.state.get(p):
                    continue
                state = {"step": torch.zeros((), dtype=_get_scalar_dtype(is_fused=group.get("fused")),
                                             device=p.device if on_device else "cpu"),
                         "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
                         "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format)}
                if group.get("amsgrad"):
                    state["max_exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                inner.state[p] = state
