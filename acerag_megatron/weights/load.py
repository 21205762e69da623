"""Load HF weights straight into TP/PP-sharded Megatron modules; each rank reads only its slices."""
from __future__ import annotations

import torch
from megatron.core import parallel_state

from acerag_megatron.models.arch import ModelArch
from acerag_megatron.weights.hf_folder import HFCheckpoint, find_prefix
from acerag_megatron.weights.mapping import hf_names, hf_to_megatron_shard, match


def global_name(module, name: str) -> str:
    """Replace a stage-local layer index by the global one (PP stages number layers from 0)."""
    parts = name.split(".")
    if len(parts) > 2 and parts[0] == "decoder" and parts[1] == "layers":
        parts[2] = str(module.decoder.layers[int(parts[2])].layer_number - 1)
    return ".".join(parts)


def megatron_tensors(module) -> dict[str, torch.Tensor]:
    """The module's weight tensors by (global-layer) name, without TE/Megatron extra state."""
    return {global_name(module, k): v for k, v in module.state_dict(keep_vars=True).items()
            if not k.endswith("_extra_state")}


def _load(module, hf_path: str, arch: ModelArch) -> int:
    checkpoint = HFCheckpoint(hf_path)
    prefix = find_prefix(checkpoint)
    tp = parallel_state.get_tensor_model_parallel_world_size()
    rank = parallel_state.get_tensor_model_parallel_rank()
    loaded = 0
    for name, target in megatron_tensors(module).items():
        found = match(name)
        if found is None:
            raise KeyError(f"{name}: no HF mapping for this Megatron parameter")
        rule, layer = found
        names = hf_names(rule, layer, prefix)
        if rule.megatron == "output_layer.weight" and names[0] not in checkpoint:
            if not arch.tie_word_embeddings:
                raise KeyError(f"{checkpoint.path}: tensor 'lm_head.weight' not found and embeddings are not tied")
            names = [prefix + "embed_tokens.weight"]
        shard = hf_to_megatron_shard(rule, names, checkpoint.get, arch, tp, rank,
                                     padded_vocab=target.shape[0] * tp)
        if tuple(shard.shape) != tuple(target.shape):
            raise ValueError(f"{checkpoint.path}: {names} gives shape {tuple(shard.shape)} for {name}, "
                             f"expected {tuple(target.shape)}")
        with torch.no_grad():
            target.copy_(shard.to(dtype=target.dtype, device=target.device))
        loaded += 1
    return loaded


def load_hf_into_lm(lm, hf_path: str) -> int:
    """Load an HF causal-LM folder into this pipeline stage's FrozenLM (any TP/PP).

    Returns:
        Number of Megatron tensors filled.
    """
    return _load(lm, hf_path, lm.arch)


def load_hf_into_encoder(encoder, hf_path: str) -> int:
    """Load embeddings, the first N layers and the final norm (`norm.weight`) into the encoder.

    The folder may be a causal LM (`model.` prefix) or an exported bare LlamaModel/Qwen3Model.

    Returns:
        Number of Megatron tensors filled.
    """
    return _load(encoder, hf_path, encoder.arch)
