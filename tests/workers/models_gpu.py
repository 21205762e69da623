"""GPU checks of the model layer, asserted by tests/test_gpu_models.py (`pytest -m gpu`).

HF parity in float32, bf16 vs fp32 splice loss, flash-pinned vs SDPA logits, FlexAttention vs SDPA
vs unfused on a document mask (outputs and gradients), compiled vs eager kernels, and the packed
window pass against the per-window loop in bf16 on the default backend and, where Transformer
Engine imports, on TE layers (whose fused attention must never see the block mask).

Run: torchrun --nproc-per-node 1 -m tests.workers.models_gpu WORKDIR
"""
from __future__ import annotations

import dataclasses
import sys

import numpy as np
import torch

from tests.workers.models_common import DEVICE, VOCAB, init, report, tiny_models, tokens
from acerag_megatron.data.window import build_window_sample  # noqa: E402
from acerag_megatron.device import _te_importable, resolve_device  # noqa: E402
from acerag_megatron.models.arch import ModelArch  # noqa: E402
from acerag_megatron.models.compressive_model import build_compressive_model  # noqa: E402
from acerag_megatron.process_setup import prepare_process  # noqa: E402
from acerag_megatron.training.collate import collate_window_packed  # noqa: E402
from acerag_megatron.training.micro_batch import ModelInputs  # noqa: E402
from acerag_megatron.weights.convert import build_for_role, compare_with_hf  # noqa: E402
from acerag_megatron.weights.load import load_hf_into_encoder, load_hf_into_lm  # noqa: E402
from tests.workers.models_single import ENC_LAYERS, splice_batch  # noqa: E402
from tests.workers.train_packing_equivalence import _reference_loop_batches, weighted  # noqa: E402


def compressive_model(path: str, dtype: torch.dtype, device_info):
    arch = ModelArch.from_hf(path)
    model = build_compressive_model(arch, arch, ENC_LAYERS, tp=1, pp=1, sequence_parallel=False,
                                    params_dtype=dtype, device=device_info)
    load_hf_into_lm(model.lm, path)
    load_hf_into_encoder(model.encoder, path)
    return model


def loss_and_grads(model, batches: list[tuple[ModelInputs, torch.Tensor]]) -> tuple[float, torch.Tensor]:
    """Σ over (inputs, weights) pairs of Σ(weight x per-token CE) and the encoder gradient
    (float32, flattened)."""
    model.zero_grad(set_to_none=True)
    total = 0.0
    for inputs, weight in batches:
        loss = (model(inputs.to("cuda")).float() * weight.cuda()).sum()
        loss.backward()
        total += float(loss)
    return total, torch.cat([p.grad.float().reshape(-1) for p in model.encoder.parameters()])


def splice_loss(path: str, dtype: torch.dtype, device_info) -> tuple[torch.Tensor, torch.Tensor]:
    model = compressive_model(path, dtype, device_info)
    batch = splice_batch()
    weight = (batch.labels != -100).float() / float((batch.labels != -100).sum())
    loss, grads = loss_and_grads(model, [(batch, weight)])
    return torch.tensor(loss), grads


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a, b, dim=0))


def window_packed_vs_loop(path: str, device_info, name: str) -> None:
    """The packed single pass (block mask) against one LM row per window, bf16, real backends."""
    model = compressive_model(path, torch.bfloat16, device_info)
    worst_loss, worst_cos = 0.0, 1.0
    for seed, (method, length) in enumerate((("stride", 420), ("random", 421), ("random", 389))):
        rng = np.random.default_rng(seed)
        smp = build_window_sample(rng.integers(3, VOCAB, size=length), window=64, encoder_max_length=128,
                                  comp_candidates=[1, 2, 4, 8], method=method, rng=rng)
        ref_loss, ref_grad = loss_and_grads(model, _reference_loop_batches(smp))
        loss, grad = loss_and_grads(model, weighted([collate_window_packed(smp, 0, 1.0)]))
        worst_loss = max(worst_loss, abs(loss - ref_loss) / abs(ref_loss))
        worst_cos = min(worst_cos, cosine(grad, ref_grad))
    report(f"gpu_{name}_window_packed_vs_loop_loss_rel", worst_loss)
    report(f"gpu_{name}_window_packed_vs_loop_grad_cos", worst_cos)


def packed_backends(path: str) -> None:
    """Document mask in float32: SDPA (repeated K/V heads), compiled FlexAttention and unfused agree, with grads."""
    arch = ModelArch.from_hf(path)
    ids, pos = tokens(2, 96, seed=4)
    doc = torch.cat([torch.full((n,), i) for i, n in enumerate((40, 56))])
    allowed = (doc[:, None] == doc[None, :]) & torch.ones(96, 96, dtype=torch.bool).tril()
    mask = (~allowed).view(1, 1, 96, 96).expand(2, 1, 96, 96).cuda()
    pos = torch.cat([torch.arange(40), torch.arange(56)]).expand(2, -1).cuda()
    outs = {}
    for backend in ("sdpa", "flex", "unfused"):
        info = dataclasses.replace(DEVICE, attention_backend=backend, use_te=False, compiled_kernels=False)
        enc = build_for_role(arch, "encoder", ENC_LAYERS, tp=1, pp=1, device=info)
        load_hf_into_encoder(enc, path)
        out = enc(ids.cuda(), pos, mask)
        out.float().pow(2).sum().backward()
        outs[backend] = (out.detach(), enc.decoder.layers[0].self_attention.linear_qkv.weight.grad)
    for backend in ("flex", "unfused"):
        report(f"gpu_packed_{backend}_vs_sdpa_out", (outs[backend][0] - outs["sdpa"][0]).abs().max())
        report(f"gpu_packed_{backend}_vs_sdpa_grad_rel", rel(outs[backend][1], outs["sdpa"][1]))


def main() -> None:
    workdir = sys.argv[1]
    print(DEVICE.describe(), flush=True)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    init(1, 1)
    paths = tiny_models(workdir)
    local = resolve_device("flex")  # local layers, eager kernels: the parity reference
    for fam, path in paths.items():
        arch = ModelArch.from_hf(path)
        lm = build_for_role(arch, "lm", arch.num_layers, tp=1, pp=1, device=local)
        load_hf_into_lm(lm, path)
        report(f"gpu_{fam}_logits", compare_with_hf(lm, path, "lm", arch.num_layers))
        enc = build_for_role(arch, "encoder", ENC_LAYERS, tp=1, pp=1, device=local)
        load_hf_into_encoder(enc, path)
        report(f"gpu_{fam}_encoder", compare_with_hf(enc, path, "encoder", ENC_LAYERS))
        report(f"gpu_{fam}_params_on_cuda", float(all(p.is_cuda for p in lm.parameters())))
    qwen = paths["qwen3"]
    loss32, _ = splice_loss(qwen, torch.float32, local)
    loss16, grad16 = splice_loss(qwen, torch.bfloat16, local)
    report("gpu_bf16_vs_fp32_splice_loss_rel", abs(float(loss16 - loss32)) / abs(float(loss32)))
    report("gpu_bf16_grad_finite", float(torch.isfinite(grad16).all() and grad16.norm() > 0))
    eager_loss, eager_grad = splice_loss(qwen, torch.float32, local)
    # Compiling reroutes Megatron's RoPE for the rest of the process: eager runs come first.
    compiled = resolve_device("flex", "on")
    prepare_process(compiled)
    comp_loss, comp_grad = splice_loss(qwen, torch.float32, compiled)
    report("gpu_compiled_vs_eager_loss_rel", abs(float(comp_loss - eager_loss)) / abs(float(eager_loss)))
    report("gpu_compiled_vs_eager_grad_rel", rel(comp_grad, eager_grad))
    flash = resolve_device("flash")
    arch = ModelArch.from_hf(paths["llama"])
    outs = []
    for info in (dataclasses.replace(flash, attention_backend="sdpa"), flash):
        lm = build_for_role(arch, "lm", arch.num_layers, tp=1, pp=1, device=info, params_dtype=torch.bfloat16)
        load_hf_into_lm(lm, paths["llama"])
        ids, pos = tokens(2, 64)
        with torch.no_grad():
            outs.append(lm.eval()(input_ids=ids.cuda(), position_ids=pos.cuda()).float())
    report("gpu_flash_vs_sdpa_bf16_logits", (outs[0] - outs[1]).abs().max())
    packed_backends(qwen)
    for fam, path in paths.items():
        window_packed_vs_loop(path, resolve_device("auto"), f"default_{fam}")
    report("gpu_te_importable", float(_te_importable()))
    if _te_importable():
        te = resolve_device("te")
        report("gpu_te_layers_in_use", float(te.use_te and te.causal_attention == "te" and te.masked_attention != "te"))
        for fam, path in paths.items():
            window_packed_vs_loop(path, te, f"te_{fam}")


if __name__ == "__main__":
    main()
