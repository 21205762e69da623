"""Packed-row mask specs against masks written out pair by pair from the rules of the packed
window formulation and of document-masked finetune rows."""
import numpy as np
import pytest
import torch

from acerag_megatron.data.finetune import FinetuneSample
from acerag_megatron.data.window import WindowSample
from acerag_megatron.models.packed_mask import dense_masked, is_packed_mask, mask_mod
from acerag_megatron.training.collate import collate_finetune_packed, collate_window_packed, collate_window_packed_docs


def _window_sample():
    """Five windows with a short last one; ratios 8, 4, 2, 1 (stride selection)."""
    tokens = np.arange(150, dtype=np.int64) + 10
    segments = [(0, 32), (32, 64), (64, 96), (96, 128), (128, 150)]
    ratios = [8, 4, 2, 1]
    selected = [s + r * (np.arange((e - s) // r) + 1) - 1 for (s, e), r in zip(segments[:-1], ratios)]
    return WindowSample(tokens=tokens, segments=segments, ratios=ratios + [1], selected=selected, groups=[(0, 128)])


def _window_reference(smp, width):
    """allowed[q, k]: C tokens see earlier C tokens; W_i sees C_<i and itself causally; pads
    see themselves."""
    sizes = [len(z) for z in smp.selected]
    c_len, mu = sum(sizes), np.cumsum([0] + sizes)
    owner = []  # (kind, index) per token of the row
    for i, n in enumerate(sizes):
        owner += [("C", i)] * n
    for k, (s, e) in enumerate(smp.segments[1:], start=1):
        owner += [("W", k)] * (e - s)
    total = len(owner)
    allowed = np.zeros((width, width), dtype=bool)
    for q in range(width):
        for k in range(width):
            if q >= total or k >= total:
                allowed[q, k] = q == k
            elif owner[q][0] == "C":
                allowed[q, k] = owner[k][0] == "C" and k <= q
            else:
                i = owner[q][1]
                allowed[q, k] = k < mu[i] or (owner[k] == owner[q] and k <= q)
    assert mu[-1] == c_len
    return allowed, total


def _check(batch, allowed, total, rows=2):
    spec = batch.inputs.lm_attention_mask
    assert is_packed_mask(spec) and spec.shape == (1, rows, allowed.shape[0])
    assert torch.equal(dense_masked(spec)[0, 0], torch.from_numpy(~allowed))
    s = allowed.shape[0]
    q, k = torch.arange(s)[:, None], torch.arange(s)[None, :]
    assert torch.equal(mask_mod(spec)(torch.tensor(0), torch.tensor(0), q, k), torch.from_numpy(allowed))
    assert batch.accounting.lm_attention_pairs == int(allowed[:total, :total].sum())


def test_window_row_spec_is_the_block_mask():
    smp = _window_sample()
    for multiple in (1, 8):  # 8: padded to a sequence-parallel multiple
        batch = collate_window_packed(smp, pad_id=0, multiple=multiple)
        allowed, total = _window_reference(smp, batch.inputs.lm_input_ids.shape[1])
        _check(batch, allowed, total)


def test_window_documents_in_one_row_see_only_themselves():
    """Two documents back to back: each one's block mask, nothing across them, pads alone."""
    first, second = _window_sample(), _window_sample()
    batch = collate_window_packed_docs([first, second], pad_id=0, multiple=8)
    width = batch.inputs.lm_input_ids.shape[1]
    n = _window_reference(first, 0)[1]  # the document's row length
    one = _window_reference(first, n)[0]
    allowed = np.eye(width, dtype=bool)
    allowed[:n, :n] = one
    allowed[n:2 * n, n:2 * n] = one
    _check(batch, allowed, 2 * n, rows=3)
    assert batch.accounting.num_samples == 2
    # Each document's positions start again at 0 and its tokens weigh 1 / its own targets.
    pos = batch.inputs.lm_position_ids[0]
    assert torch.equal(pos[n:2 * n], pos[:n])
    weights = batch.accounting.loss_weight[0]
    assert weights[:n].sum().item() == pytest.approx(1.0) and weights[n:2 * n].sum().item() == pytest.approx(1.0)


def test_finetune_row_spec_is_a_document_mask():
    samples = []
    for n, p in ((9, 2), (5, 1), (12, 3)):
        ids = np.arange(n, dtype=np.int64) + 5
        samples.append(FinetuneSample(input_ids=ids, labels=ids, placeholder_start=1,
                                      encoder_chunks=[np.arange(8)], encoder_indices=[np.arange(p)], ratio=4))
    batch = collate_finetune_packed(samples, pad_id=0, multiple=4)
    width, bounds = batch.inputs.lm_input_ids.shape[1], np.cumsum([0, 9, 5, 12])
    allowed = np.eye(width, dtype=bool)
    for a, b in zip(bounds[:-1], bounds[1:]):
        allowed[a:b, a:b] = np.tril(np.ones((b - a, b - a), dtype=bool))
    _check(batch, allowed, bounds[-1])
    # The encoder row: three chunks of 8 tokens, each its own causal document from position 0.
    enc_spec, enc_pos = batch.inputs.enc_attention_mask, batch.inputs.enc_position_ids[0]
    enc_allowed = np.eye(24, dtype=bool)
    for a in (0, 8, 16):
        enc_allowed[a:a + 8, a:a + 8] = np.tril(np.ones((8, 8), dtype=bool))
    assert torch.equal(dense_masked(enc_spec)[0, 0], torch.from_numpy(~enc_allowed))
    assert enc_pos.tolist() == list(range(8)) * 3
    assert batch.inputs.enc_gather_index.tolist() == [0, 1, 8, 16, 17, 18]  # indices 0..p-1 of each chunk


def test_dense_masks_are_not_specs():
    assert not is_packed_mask(None)
    assert not is_packed_mask(torch.zeros(1, 1, 4, 4, dtype=torch.bool))
