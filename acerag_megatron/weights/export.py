"""Export Megatron modules as Hugging Face folders (TP shards gathered, PP stages merged).

Folders are written to a temporary sibling and renamed into place, so a reader never sees a
partial folder. The encoder export involves only the first stage's TP group; the LM export is
collective over all ranks, each pipeline stage writing its own files into the shared folder.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
import torch.distributed as dist
from megatron.core import parallel_state

from acerag_megatron.data.tokenizer_files import tokenizer_files
from acerag_megatron.models.arch import ModelArch
from acerag_megatron.weights.atomic import replace_dir
from acerag_megatron.weights.hf_config import read_hf_config, write_hf_config
from acerag_megatron.weights.load import megatron_tensors
from acerag_megatron.weights.mapping import REPLICATED, hf_names, match, megatron_shards_to_hf

MAX_SHARD_BYTES = 5 * 1024**3
_DTYPE_NAMES = {torch.bfloat16: "bfloat16", torch.float16: "float16", torch.float32: "float32"}


def gather_hf_tensors(module, arch: ModelArch, prefix: str, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Collective over the TP group: HF-named full tensors of this stage on TP rank 0 (empty elsewhere,
    so only one copy of the weights is held in host memory per stage)."""
    group = parallel_state.get_tensor_model_parallel_group()
    tp = parallel_state.get_tensor_model_parallel_world_size()
    keep = parallel_state.get_tensor_model_parallel_rank() == 0
    out: dict[str, torch.Tensor] = {}
    for name, tensor in megatron_tensors(module).items():
        found = match(name)
        if found is None:
            raise KeyError(f"{name}: no HF mapping for this Megatron parameter")
        rule, layer = found
        if rule.megatron == "output_layer.weight" and arch.tie_word_embeddings:
            continue  # the tied head is the embedding table
        tensor = tensor.detach()
        if rule.kind == REPLICATED or tp == 1:
            shards = [tensor]
        else:
            shards = [torch.empty_like(tensor) for _ in range(tp)]
            dist.all_gather(shards, tensor.contiguous(), group=group)
        if not keep:
            continue
        merged = megatron_shards_to_hf(rule, hf_names(rule, layer, prefix), [s.cpu() for s in shards], arch)
        out.update({k: v.to(dtype).contiguous() for k, v in merged.items()})
    return out


def _split_by_size(tensors: dict[str, torch.Tensor]) -> list[dict[str, torch.Tensor]]:
    files, current, size = [], {}, 0
    for name, tensor in tensors.items():
        nbytes = tensor.numel() * tensor.element_size()
        if current and size + nbytes > MAX_SHARD_BYTES:
            files.append(current)
            current, size = {}, 0
        current[name] = tensor
        size += nbytes
    files.append(current)
    return files


def _write_stage_files(tensors: dict[str, torch.Tensor], folder: Path, stage: int, num_stages: int) -> dict[str, str]:
    """Write one stage's tensors; returns the weight map (tensor name -> file name)."""
    from safetensors.torch import save_file

    parts = _split_by_size(tensors)
    weight_map = {}
    for k, part in enumerate(parts):
        single = num_stages == 1 and len(parts) == 1
        file_name = "model.safetensors" if single else f"model-stage{stage:02d}-{k:05d}.safetensors"
        save_file(part, str(folder / file_name), metadata={"format": "pt"})
        weight_map.update({name: file_name for name in part})
    return weight_map


def _hf_config(source: str, architecture: str, num_layers: int | None, dtype: torch.dtype) -> dict:
    config = read_hf_config(source)
    config["architectures"] = [architecture]
    if num_layers is not None:
        config["num_hidden_layers"] = num_layers
        if isinstance(config.get("layer_types"), list):
            config["layer_types"] = config["layer_types"][:num_layers]
    config.pop("torch_dtype", None)
    config["dtype"] = _DTYPE_NAMES[dtype]
    return config


def _export_stages(module, arch: ModelArch, out_dir, *, prefix: str, config: dict, dtype: torch.dtype) -> Path:
    """World-collective export where every pipeline stage writes its own files."""
    out_dir = Path(out_dir)
    rank = dist.get_rank()
    tmp = out_dir.parent / f".{out_dir.name}.tmp"
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    dist.barrier()
    weight_map: dict[str, str] = {}
    tensors = gather_hf_tensors(module, arch, prefix, dtype)
    if parallel_state.get_tensor_model_parallel_rank() == 0 and parallel_state.get_data_parallel_rank() == 0:
        weight_map = _write_stage_files(tensors, tmp, parallel_state.get_pipeline_model_parallel_rank(),
                                        parallel_state.get_pipeline_model_parallel_world_size())
    maps = [None] * dist.get_world_size()
    dist.all_gather_object(maps, weight_map)
    if rank == 0:
        _write_index_and_config(tmp, {k: v for m in maps for k, v in m.items()}, config)
        replace_dir(tmp, out_dir)
    dist.barrier()
    return out_dir


def _write_index_and_config(folder: Path, weight_map: dict[str, str], config: dict) -> None:
    files = set(weight_map.values())
    if files != {"model.safetensors"}:
        total = sum((folder / f).stat().st_size for f in files)
        index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
        (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    write_hf_config(config, folder)


def _copy_tokenizer(source: str, folder: Path, *, required: bool) -> None:
    # Byte copies, not a re-save: transformers 5 saves tokenizer classes (TokenizersBackend)
    # that 4.57 does not know, while the source's own files are what both versions read.
    try:
        files = tokenizer_files(source)
    except ValueError:
        if required:
            raise
        return
    for name, path in files.items():
        shutil.copyfile(path, folder / name)


def export_encoder_hf(encoder, out_dir, *, hf_config_from: str, tokenizer_from: str | None = None,
                      dtype: torch.dtype = torch.bfloat16) -> Path:
    """Write the encoder as a bare LlamaModel / Qwen3Model folder loadable by AutoModel, with a tokenizer.

    Collective over the encoder's TP group only: call it on every rank of the first pipeline
    stage (calling it with encoder=None elsewhere is a no-op). Data-parallel replicas other than
    the first return at once; TP rank 0 of the first replica writes and renames atomically.

    Args:
        encoder: CompressiveEncoder (unwrapped), or None on later pipeline stages.
        out_dir: destination folder (replaced atomically).
        hf_config_from: folder or hub id whose config is written, with num_hidden_layers=N.
        tokenizer_from: folder or hub id whose tokenizer files are copied in (the LM's: encoder
            inputs are LM token ids); it must hold a tokenizer. None: those of hf_config_from, if any
            (a config-only source, such as an encoder exported without one, gives none).
        dtype: dtype of the written weights.

    Raises:
        ValueError: tokenizer_from holds no tokenizer files.
    """
    out_dir = Path(out_dir)
    if encoder is None or parallel_state.get_data_parallel_rank() != 0:
        return out_dir
    tensors = gather_hf_tensors(encoder, encoder.arch, "", dtype)
    if parallel_state.get_tensor_model_parallel_rank() == 0:
        architecture = {"llama": "LlamaModel", "qwen3": "Qwen3Model"}[encoder.arch.family]
        config = _hf_config(hf_config_from, architecture, encoder.config.num_layers, dtype)
        tmp = out_dir.parent / f".{out_dir.name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        weight_map = _write_stage_files(tensors, tmp, stage=0, num_stages=1)
        _write_index_and_config(tmp, weight_map, config)
        _copy_tokenizer(tokenizer_from or hf_config_from, tmp, required=tokenizer_from is not None)
        replace_dir(tmp, out_dir)
    dist.barrier(group=parallel_state.get_tensor_model_parallel_group())
    return out_dir


def export_lm_hf(lm, out_dir, *, hf_config_from: str, dtype: torch.dtype = torch.bfloat16) -> Path:
    """Write the full LM (gathered over TP and PP) as a *ForCausalLM folder. Collective."""
    architecture = {"llama": "LlamaForCausalLM", "qwen3": "Qwen3ForCausalLM"}[lm.arch.family]
    config = _hf_config(hf_config_from, architecture, lm.arch.num_layers, dtype) if dist.get_rank() == 0 else None
    return _export_stages(lm, lm.arch, out_dir, prefix="model.", config=config, dtype=dtype)
