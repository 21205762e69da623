"""Two-rank checks: TP=2 parity, sequence parallel == TP=1, wrong layouts caught, TP2->TP1 checkpoint.

Run: torchrun --nproc-per-node 2 -m tests.workers.models_tp WORKDIR
"""
from __future__ import annotations

import os
import sys

from tests.workers.models_common import DEVICE, init, report, tiny_models, tokens

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from megatron.core import parallel_state, tensor_parallel  # noqa: E402
from safetensors.torch import load_file  # noqa: E402
from transformers import AutoModel, AutoModelForCausalLM  # noqa: E402

from acerag_megatron.models.arch import ModelArch  # noqa: E402
from acerag_megatron.models.compressive_model import build_compressive_model  # noqa: E402
from acerag_megatron.models.head_loss import frozen_head_cross_entropy  # noqa: E402
from acerag_megatron.weights.convert import build_for_role, compare_with_hf, hf_to_megatron, load_converted  # noqa: E402
from acerag_megatron.weights.dist_ckpt import save_module  # noqa: E402
from acerag_megatron.weights.export import export_encoder_hf  # noqa: E402
from acerag_megatron.weights.hf_folder import HFCheckpoint  # noqa: E402
from acerag_megatron.weights.load import load_hf_into_encoder, load_hf_into_lm  # noqa: E402
from tests.workers.models_single import ENC_LAYERS, splice_batch, tensors_mismatch  # noqa: E402


def tp_parity(fam: str, path: str) -> None:
    arch = ModelArch.from_hf(path)
    hf = AutoModelForCausalLM.from_pretrained(path).eval()
    hf_enc = AutoModel.from_pretrained(path, num_hidden_layers=ENC_LAYERS).eval()
    ids, pos = tokens(2, 24)
    for sp in (False, True):
        tag = "_sp" if sp else ""
        lm = build_for_role(arch, "lm", arch.num_layers, tp=2, pp=1, device=DEVICE, sequence_parallel=sp).eval()
        load_hf_into_lm(lm, path)
        enc = build_for_role(arch, "encoder", ENC_LAYERS, tp=2, pp=1, device=DEVICE, sequence_parallel=sp).eval()
        load_hf_into_encoder(enc, path)
        with torch.no_grad():
            report(f"{fam}_tp2{tag}_logits", (lm(input_ids=ids, position_ids=pos) - hf(input_ids=ids).logits).abs().max())
            out = enc(ids, pos).transpose(0, 1)
            report(f"{fam}_tp2{tag}_encoder", (out - hf_enc(input_ids=ids).last_hidden_state).abs().max())


def wrong_layouts(path: str, workdir: str) -> None:
    """Load with a naive [Q;K;V] or a globally split [gate;up]: compare_with_hf must see it."""
    arch = ModelArch.from_hf(path)
    checkpoint = HFCheckpoint(path)
    tp, rank = 2, parallel_state.get_tensor_model_parallel_rank()
    for bug in ("qkv", "fc1"):
        lm = build_for_role(arch, "lm", arch.num_layers, tp=2, pp=1, device=DEVICE)
        load_hf_into_lm(lm, path)
        with torch.no_grad():
            for i, layer in enumerate(lm.decoder.layers):
                p = f"model.layers.{i}."
                if bug == "qkv":
                    full = torch.cat([checkpoint.get(p + f"self_attn.{x}_proj.weight") for x in "qkv"])
                    layer.self_attention.linear_qkv.weight.copy_(full.chunk(tp)[rank])
                else:
                    full = torch.cat([checkpoint.get(p + f"mlp.{x}_proj.weight") for x in ("gate", "up")])
                    layer.mlp.linear_fc1.weight.copy_(full.chunk(tp)[rank])
        report(f"wrong_{bug}_diff", compare_with_hf(lm, path, "lm", arch.num_layers))
        if bug == "qkv":
            save_module(lm, os.path.join(workdir, "bad_qkv_ckpt"),
                        extra_info={"role": "lm", "num_layers": arch.num_layers, "hf_config": arch.hf_config})


def checkpoint_reshard(path: str, workdir: str) -> None:
    """torch_dist saved at TP=2 loads at TP=1 with equal outputs (and TP=2 export is bit-exact)."""
    arch = ModelArch.from_hf(path)
    ids, pos = tokens(2, 24, seed=7)
    ckpt = os.path.join(workdir, "lm_tp2_ckpt")
    hf_to_megatron(path, ckpt, role="lm", num_layers=None, tp=2, pp=1, device=DEVICE)
    lm, _, _, _ = load_converted(ckpt, tp=2, pp=1, device=DEVICE)
    with torch.no_grad():
        at_tp2 = lm.eval()(input_ids=ids, position_ids=pos)
    enc = build_for_role(arch, "encoder", ENC_LAYERS, tp=2, pp=1, device=DEVICE)
    load_hf_into_encoder(enc, path)
    out_dir = os.path.join(workdir, "enc_tp2_export")
    export_encoder_hf(enc, out_dir, hf_config_from=path, dtype=torch.float32)
    if dist.get_rank() == 0:
        source = {k[len("model."):]: v for k, v in load_file(f"{path}/model.safetensors").items()
                  if k.startswith("model.") and (not k.startswith("model.layers.") or int(k.split(".")[2]) < ENC_LAYERS)}
        report("tp2_encoder_export_bits", tensors_mismatch(source, load_file(f"{out_dir}/model.safetensors")),
               collective=False)
    init(1, 1)
    lm1, _, _, _ = load_converted(ckpt, tp=1, pp=1, device=DEVICE)
    with torch.no_grad():
        report("ckpt_tp2_to_tp1_logits", (lm1.eval()(input_ids=ids, position_ids=pos) - at_tp2).abs().max())


def splice_grads(path: str, tp: int, sp: bool) -> dict[str, torch.Tensor]:
    arch = ModelArch.from_hf(path)
    model = build_compressive_model(arch, arch, ENC_LAYERS, tp=tp, pp=1, sequence_parallel=sp,
                                    params_dtype=torch.float32, device=DEVICE)
    load_hf_into_lm(model.lm, path)
    load_hf_into_encoder(model.encoder, path)
    loss = model(splice_batch())
    loss.sum().backward()
    group = parallel_state.get_tensor_model_parallel_group()
    for param in model.encoder.parameters():  # what finalize_model_grads does for SP-tagged norms
        if sp and getattr(param, "sequence_parallel", False):
            dist.all_reduce(param.grad, group=group)
    return {"loss": loss.detach(), "norm": model.encoder.decoder.final_layernorm.weight.grad,
            "embed": model.encoder.embedding.word_embeddings.weight.grad,
            "layer0_norm": model.encoder.decoder.layers[0].input_layernorm.weight.grad}


def sequence_parallel_equals_tp1(path: str) -> None:
    init(1, 1)
    ref = splice_grads(path, 1, False)
    for sp in (False, True):
        init(2, 1)
        got = splice_grads(path, 2, sp)
        tag = "tp2_sp" if sp else "tp2"
        rows = got["embed"].shape[0]
        start = parallel_state.get_tensor_model_parallel_rank() * rows
        ref_rows = ref["embed"][start:start + rows]
        report(f"{tag}_splice_loss_vs_tp1", (got["loss"] - ref["loss"]).abs().max())
        report(f"{tag}_final_norm_grad_vs_tp1", (got["norm"] - ref["norm"]).abs().max())
        report(f"{tag}_layer_norm_grad_vs_tp1", (got["layer0_norm"] - ref["layer0_norm"]).abs().max())
        report(f"{tag}_embed_grad_vs_tp1", (got["embed"][: ref_rows.shape[0]] - ref_rows).abs().max())


def head_loss_vocab_split() -> None:
    """Each rank holds half the head rows; loss and hidden gradient equal the unsplit ones."""
    g = torch.Generator().manual_seed(3)
    hidden = torch.randn(11, 8, generator=g, dtype=torch.float64)
    weight = torch.randn(20, 8, generator=g, dtype=torch.float64)
    target = torch.randint(0, 19, (11,), generator=g)
    grad_out = torch.rand(11, generator=g, dtype=torch.float64).float()
    full_h = hidden.clone().requires_grad_()
    full_loss = frozen_head_cross_entropy(full_h, weight, target, real_vocab=19, chunk_rows=4)
    (full_grad,) = torch.autograd.grad(full_loss, full_h, grad_out)
    rank = parallel_state.get_tensor_model_parallel_rank()
    split_h = hidden.clone().requires_grad_()
    loss = frozen_head_cross_entropy(tensor_parallel.copy_to_tensor_model_parallel_region(split_h),
                                     weight.chunk(2)[rank], target, vocab_start=rank * 10, real_vocab=19,
                                     group=parallel_state.get_tensor_model_parallel_group(), chunk_rows=4)
    (grad,) = torch.autograd.grad(loss, split_h, grad_out)
    report("head_loss_split_loss", (loss - full_loss).abs().max())
    report("head_loss_split_grad", (grad - full_grad).abs().max())


def main() -> None:
    workdir = sys.argv[1]
    init(2, 1)
    head_loss_vocab_split()
    paths = tiny_models(workdir)
    for fam, path in paths.items():
        tp_parity(fam, path)
    wrong_layouts(paths["llama"], workdir)
    sequence_parallel_equals_tp1(paths["qwen3"])
    init(2, 1)
    checkpoint_reshard(paths["qwen3"], workdir)


if __name__ == "__main__":
    main()
