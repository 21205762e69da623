"""GPU smoke check of the model layer (not part of the CPU suite): HF parity in float32 on CUDA,
bf16 splice forward/backward, SDPA vs flash-pinned attention, and a small timing.

Run on a GPU machine: torchrun --nproc-per-node 1 -m tests.workers.models_gpu WORKDIR
"""
from __future__ import annotations

import sys
import time

from tests.workers.models_common import DEVICE, init, report, tiny_models, tokens

import torch  # noqa: E402

from acerag_megatron.device import resolve_device  # noqa: E402
from acerag_megatron.models.arch import ModelArch  # noqa: E402
from acerag_megatron.models.compressive_model import build_compressive_model  # noqa: E402
from acerag_megatron.weights.convert import build_for_role, compare_with_hf  # noqa: E402
from acerag_megatron.weights.load import load_hf_into_encoder, load_hf_into_lm  # noqa: E402
from tests.workers.models_single import ENC_LAYERS, splice_batch  # noqa: E402


def on_cuda(batch: dict) -> dict:
    return {k: (v.cuda() if torch.is_tensor(v) else v) for k, v in batch.items()}


def splice_loss(path: str, dtype: torch.dtype, device_info) -> tuple[torch.Tensor, float]:
    arch = ModelArch.from_hf(path)
    model = build_compressive_model(arch, arch, ENC_LAYERS, tp=1, pp=1, sequence_parallel=False,
                                    params_dtype=dtype, device=device_info)
    load_hf_into_lm(model.lm, path)
    load_hf_into_encoder(model.encoder, path)
    loss = model(on_cuda(splice_batch()))
    loss.sum().backward()
    grad_norm = sum(float(p.grad.float().norm()) for p in model.encoder.parameters())
    return loss.detach().float(), grad_norm


def packed_backends(path: str) -> None:
    """Packed document mask: SDPA (repeated K/V heads), compiled FlexAttention and unfused agree, with grads."""
    import dataclasses

    arch = ModelArch.from_hf(path)
    ids, pos = tokens(2, 96, seed=4)
    doc = torch.cat([torch.full((n,), i) for i, n in enumerate((40, 56))])
    allowed = (doc[:, None] == doc[None, :]) & torch.ones(96, 96, dtype=torch.bool).tril()
    mask = (~allowed).view(1, 1, 96, 96).expand(2, 1, 96, 96).cuda()
    pos = torch.cat([torch.arange(40), torch.arange(56)]).expand(2, -1).cuda()
    outs = {}
    for backend in ("sdpa", "flex", "unfused"):
        info = dataclasses.replace(DEVICE, attention_backend=backend)
        enc = build_for_role(arch, "encoder", ENC_LAYERS, tp=1, pp=1, device=info)
        load_hf_into_encoder(enc, path)
        out = enc(ids.cuda(), pos, mask)
        out.float().pow(2).sum().backward()
        outs[backend] = (out.detach(), enc.decoder.layers[0].self_attention.linear_qkv.weight.grad)
    for backend in ("flex", "unfused"):
        report(f"gpu_packed_{backend}_vs_sdpa_out", (outs[backend][0] - outs["sdpa"][0]).abs().max())
        report(f"gpu_packed_{backend}_vs_sdpa_grad_rel",
               (outs[backend][1] - outs["sdpa"][1]).abs().max() / outs["sdpa"][1].abs().max())


def main() -> None:
    workdir = sys.argv[1]
    print(DEVICE.describe(), flush=True)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    init(1, 1)
    paths = tiny_models(workdir)
    for fam, path in paths.items():
        arch = ModelArch.from_hf(path)
        lm = build_for_role(arch, "lm", arch.num_layers, tp=1, pp=1, device=DEVICE)
        load_hf_into_lm(lm, path)
        report(f"gpu_{fam}_logits", compare_with_hf(lm, path, "lm", arch.num_layers))
        enc = build_for_role(arch, "encoder", ENC_LAYERS, tp=1, pp=1, device=DEVICE)
        load_hf_into_encoder(enc, path)
        report(f"gpu_{fam}_encoder", compare_with_hf(enc, path, "encoder", ENC_LAYERS))
        report(f"gpu_{fam}_params_on_cuda", float(all(p.is_cuda for p in lm.parameters())))
    loss32, _ = splice_loss(paths["qwen3"], torch.float32, DEVICE)
    loss16, grad16 = splice_loss(paths["qwen3"], torch.bfloat16, DEVICE)
    report("gpu_bf16_vs_fp32_splice_loss", (loss16 - loss32).abs().max())
    report("gpu_bf16_grad_norm_finite", float(torch.isfinite(torch.tensor(grad16)) and grad16 > 0))
    flex_loss, flex_grad = splice_loss(paths["qwen3"], torch.bfloat16, resolve_device("flex"))
    report("gpu_flex_vs_sdpa_bf16_splice_loss", (flex_loss - loss16).abs().max())
    report("gpu_flex_vs_sdpa_bf16_grad_norm_rel", abs(flex_grad - grad16) / grad16)
    flash = resolve_device("flash")
    arch = ModelArch.from_hf(paths["llama"])
    outs = []
    for info in (DEVICE, flash):
        lm = build_for_role(arch, "lm", arch.num_layers, tp=1, pp=1, device=info, params_dtype=torch.bfloat16)
        load_hf_into_lm(lm, paths["llama"])
        ids, pos = tokens(2, 64)
        with torch.no_grad():
            outs.append(lm.eval()(input_ids=ids.cuda(), position_ids=pos.cuda()).float())
    report("gpu_flash_vs_sdpa_bf16_logits", (outs[0] - outs[1]).abs().max())
    packed_backends(paths["qwen3"])
    big = build_for_role(arch, "lm", arch.num_layers, tp=1, pp=1, device=DEVICE, params_dtype=torch.bfloat16)
    ids, pos = tokens(8, 2048)
    ids, pos = ids.cuda(), pos.cuda()
    with torch.no_grad():
        for _ in range(3):
            big(input_ids=ids, position_ids=pos)
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(10):
            big(input_ids=ids, position_ids=pos)
        torch.cuda.synchronize()
    print(f"tiny LM forward 8x2048 bf16: {(time.perf_counter() - start) / 10 * 1e3:.2f} ms", flush=True)


if __name__ == "__main__":
    main()
