"""Packed formulations against their one-at-a-time references (fp32, TP=1).

Window mode: the reference runs the encoder over every group, then ONE LM pass per window k
over `[mu_k placeholders] + W_k`, and takes the token-weighted mean of the window losses; the
batched rows and the packed single pass must give the same loss and encoder gradients.
Finetuning: several samples packed in one row with a document mask must equal running the
samples one by one. Prints `CHECK <name> <value>` lines for the pytest side.
"""
from __future__ import annotations

import sys

import numpy as np
import torch

from acerag_megatron.data.window import build_window_sample
from acerag_megatron.models.compressive_model import build_compressive_model
from acerag_megatron.models.arch import ModelArch
from acerag_megatron.data.finetune import build_finetune_sample
from acerag_megatron.training.collate import (collate_finetune, collate_finetune_packed, collate_window,
                                              collate_window_packed, collate_window_packed_docs)
from acerag_megatron.training.micro_batch import MicroBatch, ModelInputs
from acerag_megatron.weights.load import load_hf_into_encoder, load_hf_into_lm
from tests.workers.models_common import DEVICE, VOCAB, init, report, tiny_models


def weighted(batches: list[MicroBatch]) -> list[tuple[ModelInputs, torch.Tensor]]:
    """(model inputs, loss weights) of each micro-batch, the pairs _loss_and_grads reads."""
    return [(b.inputs, b.accounting.loss_weight) for b in batches]


def _loss_and_grads(model, batches: list[tuple[ModelInputs, torch.Tensor]]):
    """Σ over (inputs, weights) pairs of Σ(weight x per-token CE); encoder grads accumulated over all of them."""
    model.zero_grad(set_to_none=True)
    total = 0.0
    for inputs, weight in batches:
        loss = (model(inputs) * weight).sum()
        loss.backward()
        total += float(loss)
    grads = torch.cat([p.grad.reshape(-1) for p in model.encoder.parameters()])
    return total, grads.clone()


def _reference_loop_batches(sample) -> list[tuple[ModelInputs, torch.Tensor]]:
    """One single-row (inputs, loss weights) pair per window, built directly from the WindowSample
    (no collator)."""
    tokens = torch.from_numpy(np.asarray(sample.tokens, dtype=np.int64))
    width = max(e - s for s, e in sample.groups)
    enc = torch.zeros(len(sample.groups), width, dtype=torch.long)
    flat_of = {}
    for g, (s, e) in enumerate(sample.groups):
        enc[g, : e - s] = tokens[s:e]
        for p in range(s, e):
            flat_of[p] = g * width + (p - s)
    valid = sum(e - s for s, e in sample.segments[1:])
    out = []
    for k in range(1, len(sample.segments)):
        mem = [flat_of[int(p)] for z in sample.selected[:k] for p in z]
        ids, labels = sample.window_inputs(k)
        n = len(ids)
        shifted = torch.full((1, n), -100, dtype=torch.long)
        shifted[0, :-1] = torch.from_numpy(labels[1:])
        out.append((ModelInputs(
            enc_input_ids=enc, enc_position_ids=torch.arange(width).expand_as(enc).contiguous(),
            enc_attention_mask=None, enc_gather_index=torch.tensor(mem, dtype=torch.long),
            lm_input_ids=torch.from_numpy(ids).unsqueeze(0), lm_position_ids=torch.arange(n).unsqueeze(0),
            lm_attention_mask=None, splice_index=torch.arange(len(mem)), labels=shifted,
        ), (shifted != -100).float() / valid))
    return out


def main(workdir: str):
    init(1, 1)
    paths = tiny_models(workdir)
    worst_loss, worst_grad, worst_ft_loss, worst_ft_grad = 0.0, 0.0, 0.0, 0.0
    worst_doc_loss, worst_doc_grad = 0.0, 0.0
    for fam in ("llama", "qwen3"):
        arch = ModelArch.from_hf(paths[fam])
        model = build_compressive_model(arch, arch, 2, tp=1, pp=1, sequence_parallel=False,
                                        params_dtype=torch.float32, device=DEVICE)
        load_hf_into_lm(model.lm, paths[fam])
        load_hf_into_encoder(model.encoder, paths[fam])
        cases = [("stride", 420, [1, 2, 4, 8]), ("random", 421, [1, 2, 4, 8]), ("random", 389, [2, 4])]
        for seed, (method, length, cands) in enumerate(cases):
            rng = np.random.default_rng(seed)
            tokens = rng.integers(3, VOCAB, size=length)
            # window 64, groups of 128: several groups, a short last window (length % 64 != 0).
            smp = build_window_sample(tokens, window=64, encoder_max_length=128, comp_candidates=cands,
                                      method=method, rng=rng)
            ref_loss, ref_grad = _loss_and_grads(model, _reference_loop_batches(smp))
            for name, collate in (("batched", collate_window), ("packed", collate_window_packed)):
                loss, grad = _loss_and_grads(model, weighted([collate(smp, 0, 1.0)]))
                worst_loss = max(worst_loss, abs(loss - ref_loss) / abs(ref_loss))
                worst_grad = max(worst_grad, float((grad - ref_grad).norm() / ref_grad.norm()))
                print(f"{fam} {method} L={length} {name}: loss {loss:.8f} ref {ref_loss:.8f}", flush=True)
        doc_loss, doc_grad = _window_documents_packing(model)
        worst_doc_loss, worst_doc_grad = max(worst_doc_loss, doc_loss), max(worst_doc_grad, doc_grad)
        ft_loss, ft_grad = _finetune_packing(model)
        worst_ft_loss, worst_ft_grad = max(worst_ft_loss, ft_loss), max(worst_ft_grad, ft_grad)
    report("window_loss_rel_diff", worst_loss)
    report("window_grad_rel_diff", worst_grad)
    report("window_documents_packed_loss_rel_diff", worst_doc_loss)
    report("window_documents_packed_grad_rel_diff", worst_doc_grad)
    report("finetune_packed_loss_rel_diff", worst_ft_loss)
    report("finetune_packed_grad_rel_diff", worst_ft_grad)


def _window_documents_packing(model):
    """Several window-mode documents in one packed row vs one packed row per document (the
    per-sample mean of token means over the documents), fp32."""
    rng = np.random.default_rng(11)
    docs = [build_window_sample(rng.integers(3, VOCAB, size=n), window=64, encoder_max_length=128,
                                comp_candidates=[1, 2, 4, 8], method="random", rng=rng) for n in (420, 130, 257)]
    n = len(docs)
    ref_loss, ref_grad = _loss_and_grads(model, weighted([collate_window_packed(d, 0, 1.0 / n) for d in docs]))
    loss, grad = _loss_and_grads(model, weighted([collate_window_packed_docs(docs, 0, 1.0 / n)]))
    print(f"window documents packed: loss {loss:.8f} one-by-one {ref_loss:.8f}", flush=True)
    return abs(loss - ref_loss) / abs(ref_loss), float((grad - ref_grad).norm() / ref_grad.norm())


def _finetune_samples(rng):
    out = []
    for ratio, ctx, tail in ((4, 150, 20), (2, 90, 35), (1, 40, 12), (8, 200, 9)):
        head = rng.integers(3, VOCAB, size=7)
        context = rng.integers(3, VOCAB, size=ctx)
        tail_ids = rng.integers(3, VOCAB, size=tail)
        out.append(build_finetune_sample(head, context, tail_ids, tail // 2, ratio=ratio, lm_max_length=120,
                                         encoder_max_length=64, bos_id=1, instruction_ids=[5, 6, 7],
                                         method="random", rng=rng))
    return out


def _finetune_packing(model):
    """Mean over samples of token means: one-by-one vs padded rows vs one packed row."""
    samples = _finetune_samples(np.random.default_rng(7))
    n = len(samples)
    ref_loss, ref_grad = _loss_and_grads(model, weighted([collate_finetune([s], 0, 1.0 / n) for s in samples]))
    worst_loss, worst_grad = 0.0, 0.0
    for name, collate in (("rows", collate_finetune), ("packed", collate_finetune_packed)):
        loss, grad = _loss_and_grads(model, weighted([collate(samples, 0, 1.0 / n)]))
        worst_loss = max(worst_loss, abs(loss - ref_loss) / abs(ref_loss))
        worst_grad = max(worst_grad, float((grad - ref_grad).norm() / ref_grad.norm()))
        print(f"finetune {name}: loss {loss:.8f} one-by-one {ref_loss:.8f}", flush=True)
    return worst_loss, worst_grad


if __name__ == "__main__":
    main(sys.argv[1])
