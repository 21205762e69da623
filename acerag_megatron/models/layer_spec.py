"""Transformer layer and block specs: Transformer Engine linears and norms where usable, else the
local spec with our sequence-parallel RMSNorm and a SwiGLU MLP that saves only its input for
backward. Core attention is chosen per kind of row (device.py): masked rows always reach a
module that reads the mask, whatever runs the plain causal rows."""
from __future__ import annotations

import copy
import logging

from megatron.core.models.gpt.gpt_layer_specs import (
    get_gpt_layer_local_spec,
    get_gpt_layer_with_transformer_engine_spec,
)
from megatron.core.transformer.spec_utils import ModuleSpec
from megatron.core.transformer.transformer_block import TransformerBlockSubmodules, get_num_layers_to_build

from acerag_megatron.device import DeviceInfo
from acerag_megatron.models.arch import ModelArch
from acerag_megatron.models.attention import FlexAttention, MaskRoutedAttention, SDPAttention
from acerag_megatron.models.norm import RMSNorm
from acerag_megatron.models.swiglu import SwiGLUMLP


class _QuietSwiGLUSpec(logging.Filter):
    """Megatron's TransformerLayer passes tp_group only to an MLP spec whose module is exactly
    MLP and logs "Unknown MLP type" for every layer otherwise; SwiGLUMLP (an MLP subclass) then
    takes the default tensor-parallel group, the one Megatron would have passed."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Unknown MLP type")


_quiet = _QuietSwiGLUSpec()


_TE_ATTENTION = ("megatron.core.extensions.transformer_engine", "TEDotProductAttention")


def _attention_module_spec(backend: str) -> ModuleSpec:
    if backend == "te":
        return ModuleSpec(module=_TE_ATTENTION)  # imported when built: specs are testable without TE
    if backend == "flex":
        return ModuleSpec(module=FlexAttention)
    if backend == "unfused":
        # Megatron's reference attention; it reads masks as long as its fused causal softmax
        # (which drops them) stays off, as megatron_config sets masked_softmax_fusion.
        from megatron.core.transformer.dot_product_attention import DotProductAttention

        return ModuleSpec(module=DotProductAttention)
    return ModuleSpec(module=SDPAttention, params={"flash_only": backend == "flash"})


def core_attention_spec(device_info: DeviceInfo) -> ModuleSpec:
    """The core-attention slot: one module when the causal-row backend also reads masks, else a
    router sending unmasked rows to it and masked rows to device_info.masked_attention."""
    causal, masked = device_info.causal_attention, device_info.masked_attention
    if causal == masked:
        return _attention_module_spec(masked)
    return ModuleSpec(module=MaskRoutedAttention, params={
        "causal": _attention_module_spec(causal), "masked": _attention_module_spec(masked), "causal_name": causal})


def layer_spec(arch: ModelArch, device_info: DeviceInfo, recompute_fc1: bool = False) -> ModuleSpec:
    """Spec of one transformer layer (RMSNorm, SwiGLU, RoPE, GQA, optional QK-norm).

    Args:
        arch: model architecture (qk_norm selects Qwen3's per-head query/key RMSNorm).
        device_info: TE spec when device_info.use_te, else the local spec with our modules.
        recompute_fc1: the SwiGLU MLP recomputes fc1 in the backward (local spec only: TE's
            fused MLP has no such mode, which models/recompute.check_layer_support refuses).
    """
    if device_info.use_te:
        spec = copy.deepcopy(get_gpt_layer_with_transformer_engine_spec(qk_layernorm=arch.qk_norm))
        spec.submodules.self_attention.submodules.core_attention = core_attention_spec(device_info)
        return spec
    spec = copy.deepcopy(get_gpt_layer_local_spec(normalization="RMSNorm", qk_layernorm=arch.qk_norm))
    norm = ModuleSpec(module=RMSNorm, params={"compiled_kernels": device_info.compiled_kernels})
    sub = spec.submodules
    sub.input_layernorm = norm
    sub.pre_mlp_layernorm = norm
    layer_logger = logging.getLogger("megatron.core.transformer.transformer_layer")
    if _quiet not in layer_logger.filters:
        layer_logger.addFilter(_quiet)
    sub.mlp = ModuleSpec(module=SwiGLUMLP, submodules=sub.mlp.submodules,
                         params={"compiled_kernels": device_info.compiled_kernels, "recompute_fc1": recompute_fc1})
    attn = sub.self_attention.submodules
    attn.core_attention = core_attention_spec(device_info)
    if arch.qk_norm:
        attn.q_layernorm = norm
        attn.k_layernorm = norm
    return spec


def block_spec(config, arch: ModelArch, device_info: DeviceInfo, pp_rank: int | None = None,
               recompute_fc1: bool = False) -> TransformerBlockSubmodules:
    """Spec of the layers this pipeline stage builds plus the final norm.

    A bare layer spec would make Megatron pick its own final norm, which refuses sequence
    parallelism on the local path; this block spec uses ours. recompute_fc1: see layer_spec().
    """
    layer = layer_spec(arch, device_info, recompute_fc1)
    num_layers = get_num_layers_to_build(config, pp_rank=pp_rank)
    if device_info.use_te:
        from megatron.core.extensions.transformer_engine import TENorm

        final_norm = TENorm
    else:
        final_norm = RMSNorm
    return TransformerBlockSubmodules(layer_specs=[layer] * num_layers, layer_norm=final_norm)
