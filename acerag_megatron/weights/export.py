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
SAFETENSORS_PATTERN = "model{suffix}.safetensors"
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


def _nbytes(tensor: torch.Tensor) -> int:
    return tensor.numel() * tensor.element_size()


def shard_plan(tensors: dict[str, torch.Tensor], max_shard_size: int | str) -> list[list[str]]:
    """huggingface_hub's split of tensors into files of at most max_shard_size (a bigger tensor
    gets a file of its own); returns the tensor names of each file, in file order.

    Sized per tensor, with no storage sharing: these tensors are distinct weights (a tied head is
    dropped before), but some are views into a larger buffer (Megatron's contiguous parameter
    buffer, the vocab table cut from its padded rows), which split_torch_state_dict_into_shards
    would size by the whole buffer and take for tied weights.
    """
    from huggingface_hub import split_state_dict_into_shards_factory

    split = split_state_dict_into_shards_factory(
        tensors, get_storage_size=_nbytes, get_storage_id=lambda _: None,
        filename_pattern=SAFETENSORS_PATTERN, max_shard_size=max_shard_size)
    return [list(names) for names in split.filename_to_tensors.values()]


def shard_file_name(index: int, total: int) -> str:
    """huggingface_hub's name of file `index` (0-based) of `total`: model.safetensors when alone."""
    return SAFETENSORS_PATTERN.format(suffix="" if total == 1 else f"-{index + 1:05d}-of-{total:05d}")


def _write_shards(tensors: dict[str, torch.Tensor], plan: list[list[str]], folder: Path,
                  first: int, total: int) -> dict[str, str]:
    """Write one stage's files, numbered from `first` among `total` files of the whole model;
    returns the weight map (tensor name -> file name)."""
    from safetensors.torch import save_file

    weight_map = {}
    for k, names in enumerate(plan):
        file_name = shard_file_name(first + k, total)
        save_file({name: tensors[name] for name in names}, str(folder / file_name), metadata={"format": "pt"})
        weight_map.update({name: file_name for name in names})
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


def _export_stages(module, arch: ModelArch, out_dir, *, prefix: str, config: dict, dtype: torch.dtype,
                   max_shard_size: int | str) -> Path:
    """World-collective export where every pipeline stage writes its own files: each stage splits
    its tensors with huggingface_hub, and the files are numbered across stages in stage order."""
    out_dir = Path(out_dir)
    rank = dist.get_rank()
    tmp = out_dir.parent / f".{out_dir.name}.tmp"
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    dist.barrier()
    tensors = gather_hf_tensors(module, arch, prefix, dtype)
    stage = parallel_state.get_pipeline_model_parallel_rank()
    writer = parallel_state.get_tensor_model_parallel_rank() == 0 and parallel_state.get_data_parallel_rank() == 0
    plan = shard_plan(tensors, max_shard_size) if writer else []
    counts = [None] * dist.get_world_size()
    dist.all_gather_object(counts, (stage, len(plan)) if writer else None)
    per_stage = dict(c for c in counts if c is not None)
    weight_map: dict[str, str] = {}
    if writer:
        first = sum(n for s, n in per_stage.items() if s < stage)
        weight_map = _write_shards(tensors, plan, tmp, first, sum(per_stage.values()))
    maps = [None] * dist.get_world_size()
    dist.all_gather_object(maps, (weight_map, _sizes(tensors)) if writer else None)
    if rank == 0:
        stages = [m for m in maps if m is not None]
        merged = {k: v for m, _ in stages for k, v in m.items()}
        totals = [sum(col) for col in zip(*(sizes for _, sizes in stages))]
        _write_index_and_config(tmp, merged, totals, config)
        replace_dir(tmp, out_dir)
    dist.barrier()
    return out_dir


def _sizes(tensors: dict[str, torch.Tensor]) -> tuple[int, int]:
    """(bytes, parameters) of a set of tensors, for the index metadata."""
    return sum(map(_nbytes, tensors.values())), sum(t.numel() for t in tensors.values())


def _write_index_and_config(folder: Path, weight_map: dict[str, str], sizes: tuple[int, int], config: dict) -> None:
    """config.json, and the index json transformers' save_pretrained writes when there are several files."""
    if len(set(weight_map.values())) > 1:
        total_size, total_parameters = sizes
        index = {"metadata": {"total_parameters": total_parameters, "total_size": total_size}, "weight_map": weight_map}
        (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
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
                      dtype: torch.dtype = torch.bfloat16, max_shard_size: int | str | None = None) -> Path:
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
        max_shard_size: bytes (or "5GB" as huggingface_hub reads it) per safetensors file;
            None: MAX_SHARD_BYTES. Above it the weights go to model-0000k-of-0000N.safetensors
            files with a model.safetensors.index.json.

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
        plan = shard_plan(tensors, MAX_SHARD_BYTES if max_shard_size is None else max_shard_size)
        weight_map = _write_shards(tensors, plan, tmp, 0, len(plan))
        _write_index_and_config(tmp, weight_map, _sizes(tensors), config)
        _copy_tokenizer(tokenizer_from or hf_config_from, tmp, required=tokenizer_from is not None)
        replace_dir(tmp, out_dir)
    dist.barrier(group=parallel_state.get_tensor_model_parallel_group())
    return out_dir


def export_lm_hf(lm, out_dir, *, hf_config_from: str, dtype: torch.dtype = torch.bfloat16,
                 max_shard_size: int | str | None = None) -> Path:
    """Write the full LM (gathered over TP and PP) as a *ForCausalLM folder. Collective.

    max_shard_size is as for export_encoder_hf; each pipeline stage writes its own files (a file
    never spans two stages), numbered across stages in stage order."""
    architecture = {"llama": "LlamaForCausalLM", "qwen3": "Qwen3ForCausalLM"}[lm.arch.family]
    config = _hf_config(hf_config_from, architecture, lm.arch.num_layers, dtype) if dist.get_rank() == 0 else None
    return _export_stages(lm, lm.arch, out_dir, prefix="model.", config=config, dtype=dtype,
                          max_shard_size=MAX_SHARD_BYTES if max_shard_size is None else max_shard_size)
