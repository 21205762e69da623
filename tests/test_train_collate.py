"""Collation into the model's tensor contract, and the loss weighting of the reference."""
import dataclasses

import numpy as np
import pytest
import torch

from acerag_megatron import PRETRAIN_PLACEHOLDER_TOKEN_ID
from acerag_megatron.data.finetune import FinetuneSample
from acerag_megatron.data.window import WindowSample, build_window_sample
from acerag_megatron.training.collate import (collate_finetune, collate_finetune_packed, collate_window,
                                              collate_window_packed, collate_window_packed_docs, predicted_tokens)
from acerag_megatron.training.loss import loss_scale, make_loss_func
from acerag_megatron.training.micro_batch import Accounting, MicroBatch, ModelInputs


def _window_sample_5000():
    """METHOD §3.6: S=5000, ratios (8,4,2,1,.), stride selection."""
    tokens = np.arange(5000, dtype=np.int64) + 10
    segments = [(0, 1024), (1024, 2048), (2048, 3072), (3072, 4096), (4096, 5000)]
    ratios = [8, 4, 2, 1, 2]
    selected = [s + r * (np.arange((e - s) // r) + 1) - 1 for (s, e), r in zip(segments[:-1], ratios)]
    return WindowSample(tokens=tokens, segments=segments, ratios=ratios, selected=selected, groups=[(0, 4096)])


def test_window_collate_matches_reference_windows():
    smp = _window_sample_5000()
    b = collate_window(smp, pad_id=0, scale=1.0)
    assert b.inputs.enc_input_ids.shape == (1, 4096)
    assert b.inputs.lm_input_ids.shape[0] == 4
    # Encoder output "states" = encoder input ids: gathering must yield Z_0..Z_{k-1} per window.
    states = b.inputs.enc_input_ids.reshape(-1)[b.inputs.enc_gather_index]
    lm_flat = b.inputs.lm_input_ids.clone().reshape(-1)
    lm_flat[b.inputs.splice_index] = states
    lm = lm_flat.reshape(b.inputs.lm_input_ids.shape)
    for k, mu in enumerate(smp.memory_lengths, start=1):
        assert mu == [128, 384, 896, 1920][k - 1]
        ids, labels = smp.window_inputs(k)
        expected = ids.copy()
        expected[:mu] = smp.tokens[np.concatenate(smp.selected[:k])]
        assert torch.equal(lm[k - 1, : len(ids)], torch.from_numpy(expected))
        assert (b.inputs.lm_input_ids[k - 1, :mu] == PRETRAIN_PLACEHOLDER_TOKEN_ID).all()
        # Shifted labels: position t predicts labels[t+1].
        assert torch.equal(b.inputs.labels[k - 1, : len(ids) - 1], torch.from_numpy(labels[1:]))
        assert (b.inputs.labels[k - 1, len(ids) - 1:] == -100).all()
    # One sample: token weights sum to the scale (a token mean across all windows).
    assert int((b.inputs.labels != -100).sum()) == 1024 * 3 + 904
    assert abs(float(b.accounting.loss_weight.sum()) - 1.0) < 1e-5


def test_window_collate_random_two_groups():
    rng = np.random.default_rng(0)
    smp = build_window_sample(np.arange(6200) + 5, window=1024, encoder_max_length=4096,
                              comp_candidates=[1, 2, 4, 8], method="random", rng=rng)
    b = collate_window(smp, pad_id=0)
    states = b.inputs.enc_input_ids.reshape(-1)[b.inputs.enc_gather_index]
    last = smp.tokens[np.concatenate(smp.selected)]
    k = len(smp.segments) - 1
    row = b.inputs.splice_index // b.inputs.lm_input_ids.shape[1]
    assert torch.equal(states[row == k - 1], torch.from_numpy(last))
    assert len(smp.groups) == 2 and b.inputs.enc_input_ids.shape == (2, 4096)


def _ft(head, p_chunks, tail, label_from, chunk_len=6):
    idx = [np.arange(1, chunk_len, 2)[:n] for n in p_chunks]
    p = sum(len(i) for i in idx)
    ids = np.concatenate([head, np.full(p, 100), tail])
    labels = np.full(len(ids), -100)
    labels[len(head) + p + label_from:] = ids[len(head) + p + label_from:]
    chunks = [np.arange(chunk_len) + 1000 * (c + 1) for c in range(len(p_chunks))]
    return FinetuneSample(input_ids=ids, labels=labels, placeholder_start=len(head), encoder_chunks=chunks,
                          encoder_indices=idx, ratio=2)


def test_finetune_collate_drops_empty_chunks_and_splices_in_order():
    a = _ft(np.array([1, 5, 6]), [3, 0, 2], np.array([7, 8, 9, 10]), label_from=2)
    b = _ft(np.array([1, 4]), [1], np.array([11, 12, 13]), label_from=1)
    batch = collate_finetune([a, b], pad_id=0, scale=1.0)
    assert batch.inputs.enc_input_ids.shape[0] == 3  # the chunk without indices is dropped
    states = batch.inputs.enc_input_ids.reshape(-1)[batch.inputs.enc_gather_index]
    lm = batch.inputs.lm_input_ids.clone().reshape(-1)
    lm[batch.inputs.splice_index] = states
    lm = lm.reshape(batch.inputs.lm_input_ids.shape)
    assert lm[0, 3:8].tolist() == [1001, 1003, 1005, 3001, 3003]
    assert lm[1, 2:3].tolist() == [1001]
    # Two samples -> the weights of each sum to the scale: mean over samples of token means.
    w = batch.accounting.loss_weight
    assert abs(float(w[0].sum()) - 1.0) < 1e-6 and abs(float(w[1].sum()) - 1.0) < 1e-6


def test_loss_weighting_equals_mean_of_sample_means():
    """Global loss over micro-batches and DP ranks = mean over samples of per-sample token means."""
    rng = np.random.default_rng(1)
    samples = [_ft(np.array([1, 2]), [2], np.arange(n) + 20, label_from=1) for n in (3, 5, 9, 4)]
    per_token = [torch.from_numpy(rng.random(len(s.input_ids))).float() for s in samples]
    ref = np.mean([float((pt[:-1] * torch.from_numpy((s.labels[1:] != -100).astype(np.float32))).sum()
                         / (s.labels[1:] != -100).sum()) for s, pt in zip(samples, per_token)])
    # 2 DP ranks x 2 micro-batches of 1 sample each; Megatron divides by M, DDP averages over D.
    m, d, g = 2, 2, 4
    scale = loss_scale(m, d, g)
    total = 0.0
    for rank in range(d):
        for mb in range(m):
            j = mb * d + rank
            batch = collate_finetune([samples[j]], pad_id=0, scale=scale)
            loss, reported = make_loss_func(batch)(per_token[j].unsqueeze(0))
            total += float(loss) / m / d
    assert abs(total - ref) < 1e-6


def test_collators_return_a_typed_batch_whose_inputs_alone_move():
    """Every collator builds a MicroBatch; ModelInputs.to moves each model tensor and leaves the
    accounting where it was built ("meta" stands in for an accelerator)."""
    window = _window_sample_5000()
    a = _ft(np.array([1, 5, 6]), [3, 0, 2], np.array([7, 8, 9, 10]), label_from=2)
    b = _ft(np.array([1, 4]), [1], np.array([11, 12, 13]), label_from=1)
    batches = {"window": collate_window(window, 0), "window_packed": collate_window_packed(window, 0),
               "window_packed_docs": collate_window_packed_docs([window, window], 0),
               "finetune": collate_finetune([a, b], 0), "finetune_packed": collate_finetune_packed([a, b], 0)}
    for name, mb in batches.items():
        assert isinstance(mb, MicroBatch) and isinstance(mb.inputs, ModelInputs), name
        assert isinstance(mb.accounting, Accounting), name
        with pytest.raises(TypeError):
            mb["labels"]  # attributes only: no string keys
        assert predicted_tokens(mb) == int((mb.inputs.labels != -100).sum()) > 0, name
        moved = mb.inputs.to("meta")
        assert isinstance(moved, ModelInputs), name
        for field in dataclasses.fields(ModelInputs):
            before, after = getattr(mb.inputs, field.name), getattr(moved, field.name)
            if before is None:
                assert after is None, (name, field.name)
                continue
            assert after.device.type == "meta" and before.device.type == "cpu", (name, field.name)
            assert after.shape == before.shape and after.dtype == before.dtype, (name, field.name)
        acc = mb.accounting
        assert acc.loss_weight.device.type == "cpu" and acc.report_group.device.type == "cpu", name
        assert acc.loss_weight.shape == acc.report_group.shape == mb.inputs.labels.shape, name
    assert batches["window_packed"].inputs.lm_attention_mask is not None
    assert batches["window"].accounting.lm_attention_pairs is None
    assert batches["window_packed_docs"].accounting.num_samples == 2
