"""The one place that turns a ModelArch plus run options into Megatron's TransformerConfig."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from megatron.core.transformer.transformer_config import TransformerConfig

from acerag_megatron.device import DeviceInfo
from acerag_megatron.models.arch import ModelArch
from acerag_megatron.models.recompute import recompute_kwargs, recompute_modules


def transformer_config(arch: ModelArch, *, num_layers: int, tp: int, pp: int, sequence_parallel: bool,
                       params_dtype: torch.dtype, device: DeviceInfo, recompute: str = "none") -> TransformerConfig:
    """Build the TransformerConfig for a stack of `num_layers` layers of `arch`.

    Args:
        arch: the model architecture.
        num_layers: layers in this stack (the encoder uses only the first N of the checkpoint).
        tp, pp: tensor/pipeline parallel sizes this stack is split over (the encoder uses pp=1).
        sequence_parallel: shard activations along the sequence outside attention/MLP (needs tp > 1).
        params_dtype: parameter dtype (torch.float32 or torch.bfloat16).
        device: resolved device; fusions need TE/GPU and are off otherwise.
        recompute: a spec for recompute_kwargs() (models/recompute.py); its 'fc1' reaches the
            layers through block_spec(recompute_fc1=recompute_fc1(recompute)), not this config.

    Raises:
        ValueError: on an unknown recompute mode or invalid parallel sizes.
    """
    recompute_fields = recompute_kwargs(recompute)
    if arch.num_kv_heads % tp:
        raise ValueError(f"tensor parallel size {tp} must divide the number of KV heads {arch.num_kv_heads}")
    if num_layers % pp:
        raise ValueError(f"pipeline parallel size {pp} must divide the number of layers {num_layers}")
    gpu = device.device == "cuda"
    kwargs = dict(
        num_layers=num_layers,
        hidden_size=arch.hidden_size,
        num_attention_heads=arch.num_attention_heads,
        num_query_groups=arch.num_kv_heads,
        kv_channels=arch.head_dim,
        ffn_hidden_size=arch.ffn_hidden_size,
        layernorm_epsilon=arch.rms_norm_eps,
        normalization="RMSNorm",
        qk_layernorm=arch.qk_norm,
        gated_linear_unit=True,
        activation_func=F.silu,
        add_bias_linear=False,
        add_qkv_bias=False,
        attention_dropout=0.0,
        hidden_dropout=0.0,
        tensor_model_parallel_size=tp,
        pipeline_model_parallel_size=pp,
        sequence_parallel=sequence_parallel and tp > 1,
        params_dtype=params_dtype,
        pipeline_dtype=params_dtype,
        bf16=params_dtype == torch.bfloat16,
        use_cpu_initialization=not gpu,
        # Positions are explicit per token (packed sequences), which the fused RoPE kernels
        # cannot take; the remaining fusions need TE or apex.
        apply_rope_fusion=False,
        bias_activation_fusion=False,
        bias_dropout_fusion=False,
        masked_softmax_fusion=False,
        persist_layer_norm=False,
        gradient_accumulation_fusion=False,
    )
    return TransformerConfig(**kwargs, **recompute_fields)


def recompute_fc1(recompute: str) -> bool:
    """Whether a recompute spec names our own 'fc1' module, which Megatron's config has no field
    for: the layer spec hands it to the SwiGLU MLP (layer_spec.block_spec)."""
    return "fc1" in recompute_modules(recompute)
