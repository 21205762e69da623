"""Library side of checkpoints_convert/: build a module for a role, convert HF <-> Megatron,
and compare a Megatron module with transformers on the same tokens."""
from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.distributed as dist
from megatron.core import parallel_state

from acerag_megatron.device import DeviceInfo
from acerag_megatron.models.arch import ModelArch
from acerag_megatron.models.encoder import CompressiveEncoder
from acerag_megatron.models.frozen_lm import FrozenLM
from acerag_megatron.models.megatron_config import transformer_config
from acerag_megatron.weights.checkpoint_info import config_dtype, read_checkpoint_info
from acerag_megatron.weights.dist_ckpt import load_sharded, save_sharded
from acerag_megatron.weights.export import export_encoder_hf, export_lm_hf
from acerag_megatron.weights.hf_folder import HFCheckpoint, find_prefix
from acerag_megatron.weights.load import load_hf_into_encoder, load_hf_into_lm

ROLES = ("lm", "encoder")
DTYPES = ("bfloat16", "float16", "float32")
EXPORT_MARKER = "acerag_export.json"
"""Written beside a megatron_to_hf output: what it came from, and proof that the folder is one."""


def build_for_role(arch: ModelArch, role: str, num_layers: int, *, tp: int, pp: int, device: DeviceInfo,
                   sequence_parallel: bool = False, params_dtype: torch.dtype = torch.float32):
    """This rank's module: a FrozenLM stage, or the encoder (None outside the first PP stage)."""
    if role not in ROLES:
        raise ValueError(f"role: unknown value {role!r}, expected one of {ROLES}")
    common = dict(tp=tp, sequence_parallel=sequence_parallel, params_dtype=params_dtype, device=device)
    if role == "lm":
        config = transformer_config(arch, num_layers=num_layers, pp=pp, **common)
        return FrozenLM(config, arch, device, parallel_state.is_pipeline_first_stage(),
                        parallel_state.is_pipeline_last_stage())
    if not parallel_state.is_pipeline_first_stage():
        return None
    return CompressiveEncoder(transformer_config(arch, num_layers=num_layers, pp=1, **common), arch, device)


def weights_dtype(hf_path: str, arch: ModelArch) -> str:
    """The dtype an HF folder's weights come in: its config's, else that of its embedding table."""
    recorded = config_dtype(arch.hf_config)
    if recorded:
        return recorded
    checkpoint = HFCheckpoint(hf_path)
    dtype = checkpoint.get(find_prefix(checkpoint) + "embed_tokens.weight", rows=slice(0, 1)).dtype
    return str(dtype).removeprefix("torch.") if str(dtype).removeprefix("torch.") in DTYPES else "float32"


def hf_to_megatron(hf_path: str, output: str, *, role: str, num_layers: int | None, tp: int, pp: int,
                   device: DeviceInfo, dtype: str = "auto") -> None:
    """Load an HF folder at the current TP/PP layout and save it as a torch_dist checkpoint.

    Args:
        dtype: storage dtype; "auto" keeps the source's, so a later export in it is bit-exact.
    """
    arch = ModelArch.from_hf(hf_path)
    num_layers = num_layers or arch.num_layers
    source = weights_dtype(hf_path, arch)
    stored = source if dtype == "auto" else dtype
    module = build_for_role(arch, role, num_layers, tp=tp, pp=pp, device=device, params_dtype=getattr(torch, stored))
    if module is not None:
        (load_hf_into_lm if role == "lm" else load_hf_into_encoder)(module, hf_path)
    state = {"model": module.sharded_state_dict()} if module is not None else {}
    save_sharded(state, output, extra_info={"role": role, "num_layers": num_layers, "hf_config": arch.hf_config,
                                            "dtype": stored, "source_dtype": source})


def load_converted(megatron_path: str, *, tp: int, pp: int, device: DeviceInfo,
                   params_dtype: torch.dtype = torch.float32):
    """Rebuild the module a hf_to_megatron or trainer checkpoint holds (at any TP/PP) and load it.

    Stored weights are cast to params_dtype on load; float32 holds every stored dtype exactly.

    Returns:
        (module or None, arch, role, num_layers)
    """
    info = read_checkpoint_info(megatron_path)
    module = build_for_role(info.arch, info.role, info.num_layers, tp=tp, pp=pp, device=device,
                            params_dtype=params_dtype)
    if module is not None:
        loaded = load_sharded({"model": module.sharded_state_dict(prefix=info.key_prefix)}, info.path)["model"]
        module.load_state_dict({k[len(info.key_prefix):]: v for k, v in loaded.items()}, strict=True)
    elif info.role == "encoder":
        load_sharded({}, info.path)  # keep the collective load in step on later stages
    return module, info.arch, info.role, info.num_layers


def export_dtype(megatron_path: str, hf_config_from: str, dtype: str = "auto") -> str:
    """The dtype megatron_to_hf writes: "auto" = the checkpoint's source dtype (else --hf-config-from's)."""
    if dtype != "auto":
        return dtype
    recorded = read_checkpoint_info(megatron_path).source_dtype
    return recorded or config_dtype(ModelArch.from_hf(hf_config_from).hf_config) or "float32"


def megatron_to_hf(megatron_path: str, output: str, *, hf_config_from: str, tp: int, pp: int, device: DeviceInfo,
                   dtype: str = "auto") -> None:
    """Export a hf_to_megatron (or trainer) checkpoint as an HF folder."""
    written = export_dtype(megatron_path, hf_config_from, dtype)
    module, _, role, _ = load_converted(megatron_path, tp=tp, pp=pp, device=device)
    if role == "lm":
        export_lm_hf(module, output, hf_config_from=hf_config_from, dtype=getattr(torch, written))
    else:
        export_encoder_hf(module, output, hf_config_from=hf_config_from, dtype=getattr(torch, written))
    dist.barrier()  # the encoder export synchronises only the first stage's TP group
    if dist.get_rank() == 0:
        marker = {"written_by": "megatron_to_hf", "megatron_path": str(megatron_path), "role": role,
                  "dtype": written}
        (Path(output) / EXPORT_MARKER).write_text(json.dumps(marker, indent=2))
    dist.barrier()


def is_megatron_to_hf_output(folder: Path) -> bool:
    return (folder / EXPORT_MARKER).is_file() and (folder / "config.json").is_file()


def pipeline_forward(lm: FrozenLM, input_ids, position_ids, attention_mask=None):
    """Forward-only pass through all PP stages with point-to-point sends.

    Returns:
        Logits [B, S, V] on the last stage, None elsewhere.
    """
    if not parallel_state.is_pipeline_first_stage():
        shape = (input_ids.shape[1], input_ids.shape[0], lm.config.hidden_size)
        if lm.config.sequence_parallel:
            shape = (shape[0] // parallel_state.get_tensor_model_parallel_world_size(), *shape[1:])
        received = torch.empty(shape, dtype=lm.config.params_dtype, device=input_ids.device)
        dist.recv(received, src=parallel_state.get_pipeline_model_parallel_prev_rank())
        lm.set_input_tensor(received)
    out = lm(input_ids=input_ids, position_ids=position_ids, attention_mask=attention_mask)
    if not parallel_state.is_pipeline_last_stage():
        dist.send(out.contiguous(), dst=parallel_state.get_pipeline_model_parallel_next_rank())
        return None
    return out


def compare_with_hf(module, hf_path: str, role: str, num_layers: int, *, seq_length: int = 24,
                    batch_size: int = 2, seed: int = 0) -> float:
    """Max abs difference vs transformers on random tokens (logits for lm, final hidden for encoder).

    Collective; every rank returns the same number (the maximum over ranks that compared).
    """
    from transformers import AutoModel, AutoModelForCausalLM

    arch = module.arch if module is not None else ModelArch.from_hf(hf_path)
    device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, arch.vocab_size, (batch_size, seq_length), generator=generator).to(device)
    pos = torch.arange(seq_length, device=device).expand(batch_size, -1)
    diff = torch.zeros((), device=device)
    with torch.no_grad():
        if role == "lm":
            module.eval()
            out = pipeline_forward(module, ids, pos)
            if out is not None:
                ref = AutoModelForCausalLM.from_pretrained(hf_path, dtype=torch.float32).to(device).eval()
                ref = ref(input_ids=ids).logits
                diff = (out.float() - ref).abs().max()
        elif module is not None:
            module.eval()
            out = module(ids, pos).transpose(0, 1)
            ref = AutoModel.from_pretrained(hf_path, dtype=torch.float32, num_hidden_layers=num_layers).to(device).eval()
            diff = (out.float() - ref(input_ids=ids).last_hidden_state).abs().max()
    diff = diff.float().reshape(1).clone()
    dist.all_reduce(diff, op=dist.ReduceOp.MAX)
    return float(diff)
