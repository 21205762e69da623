"""Two-rank pipeline checks: PP=2 logits parity (also tied embeddings), PP=2 LM export bit-exact,
CompressiveModel through Megatron's 1F1B schedule equal to PP=1, encoder export from stage 0.

Run: torchrun --nproc-per-node 2 -m tests.workers.models_pp WORKDIR
"""
from __future__ import annotations

import os
import sys

from tests.workers.models_common import DEVICE, VOCAB, init, report, tiny_models, tokens

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from megatron.core import parallel_state  # noqa: E402
from megatron.core.pipeline_parallel import get_forward_backward_func  # noqa: E402
from safetensors.torch import load_file  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402

from acerag_megatron.models.arch import ModelArch  # noqa: E402
from acerag_megatron.models.compressive_model import build_compressive_model  # noqa: E402
from acerag_megatron.tiny.models import make_tiny_hf_model  # noqa: E402
from acerag_megatron.weights.convert import build_for_role, compare_with_hf  # noqa: E402
from acerag_megatron.weights.export import export_encoder_hf, export_lm_hf  # noqa: E402
from acerag_megatron.weights.load import load_hf_into_encoder, load_hf_into_lm  # noqa: E402
from tests.workers.models_single import ENC_LAYERS, splice_batch, tensors_mismatch  # noqa: E402


def pp_parity_and_export(name: str, path: str, workdir: str) -> None:
    arch = ModelArch.from_hf(path)
    lm = build_for_role(arch, "lm", arch.num_layers, tp=1, pp=2, device=DEVICE)
    load_hf_into_lm(lm, path)
    report(f"{name}_pp2_logits", compare_with_hf(lm, path, "lm", arch.num_layers))
    out_dir = os.path.join(workdir, f"export_pp2_{name}")
    export_lm_hf(lm, out_dir, hf_config_from=path, dtype=torch.float32)
    if dist.get_rank() == 0:
        exported = {}
        for file in os.listdir(out_dir):
            if file.endswith(".safetensors"):
                exported.update(load_file(os.path.join(out_dir, file)))
        report(f"{name}_pp2_export_bits", tensors_mismatch(load_file(f"{path}/model.safetensors"), exported),
               collective=False)
        reloaded = AutoModelForCausalLM.from_pretrained(out_dir).eval()
        ref = AutoModelForCausalLM.from_pretrained(path).eval()
        ids, _ = tokens(2, 16)
        with torch.no_grad():
            report(f"{name}_pp2_export_reload", (reloaded(input_ids=ids).logits - ref(input_ids=ids).logits).abs().max(),
                   collective=False)


def schedule_run(path: str, pp: int) -> dict:
    """Two micro-batches through the 1F1B schedule; per-token losses and encoder grads."""
    arch = ModelArch.from_hf(path)
    model = build_compressive_model(arch, arch, ENC_LAYERS, tp=1, pp=pp, sequence_parallel=False,
                                    params_dtype=torch.float32, device=DEVICE)
    load_hf_into_lm(model.lm, path)
    if model.encoder is not None:
        load_hf_into_encoder(model.encoder, path)
    batches = [splice_batch(seed=5), splice_batch(seed=6)]
    losses = []

    def loss_func(loss_BS):
        losses.append(loss_BS.detach().clone())
        total = loss_BS.sum()
        return total, {"loss": total.detach()}

    def forward_step(data_iterator, module):
        return module(next(data_iterator)), loss_func

    get_forward_backward_func()(forward_step_func=forward_step, data_iterator=iter(batches), model=[model],
                                num_microbatches=len(batches), seq_length=16, micro_batch_size=2, forward_only=False)
    grads = {}
    if model.encoder is not None:
        grads = {n: p.grad.clone() for n, p in model.encoder.named_parameters()}
    return {"losses": losses, "grads": grads}


def schedule_pp2_equals_pp1(path: str) -> None:
    init(1, 1)
    ref = schedule_run(path, 1)
    init(1, 2)
    got = schedule_run(path, 2)
    if parallel_state.is_pipeline_last_stage():
        report("schedule_pp2_loss_vs_pp1",
               max((a - b).abs().max() for a, b in zip(got["losses"], ref["losses"])), collective=False)
        report("schedule_pp2_num_losses", len(got["losses"]), collective=False)
    if parallel_state.is_pipeline_first_stage():
        report("schedule_pp2_encoder_grad_vs_pp1",
               max((got["grads"][n] - g).abs().max() for n, g in ref["grads"].items()), collective=False)
        report("schedule_pp2_encoder_grad_norm", sum(g.norm() for g in got["grads"].values()), collective=False)


def encoder_export_from_stage0(path: str, workdir: str) -> None:
    arch = ModelArch.from_hf(path)
    enc = build_for_role(arch, "encoder", ENC_LAYERS, tp=1, pp=2, device=DEVICE)
    out_dir = os.path.join(workdir, "enc_pp2_export")
    if enc is not None:  # only the first stage calls it, as a trainer does
        load_hf_into_encoder(enc, path)
        export_encoder_hf(enc, out_dir, hf_config_from=path, dtype=torch.float32)
    dist.barrier()
    report("pp2_encoder_export_files", len(os.listdir(out_dir)), collective=False)


def main() -> None:
    workdir = sys.argv[1]
    init(1, 2)
    paths = tiny_models(workdir)
    tied = os.path.join(workdir, "hf_llama_tied")
    if dist.get_rank() == 0 and not os.path.exists(os.path.join(tied, "config.json")):
        make_tiny_hf_model("llama", tied, VOCAB, num_layers=4, seed=3, tie_word_embeddings=True)
    dist.barrier()
    for name, path in {**paths, "llama_tied": tied}.items():
        pp_parity_and_export(name, path, workdir)
    encoder_export_from_stage0(paths["llama"], workdir)
    schedule_pp2_equals_pp1(paths["llama"])


if __name__ == "__main__":
    main()
