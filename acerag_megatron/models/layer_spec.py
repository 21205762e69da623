"""Transformer layer and block specs: Transformer Engine where usable, else the local spec with
our sequence-parallel RMSNorm, our core attention (SDPA by default, or FlexAttention) and a
SwiGLU MLP that saves only its input for backward."""
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
from acerag_megatron.models.attention import FlexAttention, SDPAttention
from acerag_megatron.models.norm import RMSNorm
from acerag_megatron.models.swiglu import SwiGLUMLP


class _QuietSwiGLUSpec(logging.Filter):
    """Megatron's TransformerLayer passes tp_group only to an MLP spec whose module is exactly
    MLP and logs "Unknown MLP type" for every layer otherwise; SwiGLUMLP (an MLP subclass) then
    takes the default tensor-parallel group, the one Megatron would have passed."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Unknown MLP type")


_quiet = _QuietSwiGLUSpec()


def layer_spec(arch: ModelArch, device_info: DeviceInfo) -> ModuleSpec:
    """Spec of one transformer layer (RMSNorm, SwiGLU, RoPE, GQA, optional QK-norm).

    Args:
        arch: model architecture (qk_norm selects Qwen3's per-head query/key RMSNorm).
        device_info: TE spec when device_info.use_te, else the local spec with our modules.
    """
    if device_info.use_te:
        return get_gpt_layer_with_transformer_engine_spec(qk_layernorm=arch.qk_norm)
    spec = copy.deepcopy(get_gpt_layer_local_spec(normalization="RMSNorm", qk_layernorm=arch.qk_norm))
    norm = ModuleSpec(module=RMSNorm, params={"compiled_kernels": device_info.compiled_kernels})
    sub = spec.submodules
    sub.input_layernorm = norm
    sub.pre_mlp_layernorm = norm
    layer_logger = logging.getLogger("megatron.core.transformer.transformer_layer")
    if _quiet not in layer_logger.filters:
        layer_logger.addFilter(_quiet)
    sub.mlp = ModuleSpec(module=SwiGLUMLP, submodules=sub.mlp.submodules,
                         params={"compiled_kernels": device_info.compiled_kernels})
    attn = sub.self_attention.submodules
    backend = device_info.attention_backend
    if backend == "flex":
        attn.core_attention = ModuleSpec(module=FlexAttention)
    elif backend != "unfused":  # 'unfused' keeps Megatron's DotProductAttention as a reference
        attn.core_attention = ModuleSpec(module=SDPAttention, params={"flash_only": backend == "flash"})
    if arch.qk_norm:
        attn.q_layernorm = norm
        attn.k_layernorm = norm
    return spec


def block_spec(config, arch: ModelArch, device_info: DeviceInfo, pp_rank: int | None = None) -> TransformerBlockSubmodules:
    """Spec of the layers this pipeline stage builds plus the final norm.

    A bare layer spec would make Megatron pick its own final norm, which refuses sequence
    parallelism on the local path; this block spec uses ours.
    """
    layer = layer_spec(arch, device_info)
    num_layers = get_num_layers_to_build(config, pp_rank=pp_rank)
    if device_info.use_te:
        from megatron.core.extensions.transformer_engine import TENorm

        final_norm = TENorm
    else:
        final_norm = RMSNorm
    return TransformerBlockSubmodules(layer_specs=[layer] * num_layers, layer_norm=final_norm)
