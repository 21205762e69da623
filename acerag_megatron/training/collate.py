"""Samples -> one MicroBatch (training/micro_batch.py: the model's inputs and the loss's accounting).

Window mode uses the batched form of the reference's per-window loop: one LM row per
predicted window k (memory placeholders for Z_0..Z_{k-1}, then the raw tokens of window k),
right-padded; every encoder group is one encoder row. Right padding under a causal mask
leaves every real token's attention unchanged, so each row computes exactly what one
iteration of the reference loop computes, and one forward serves the pipeline schedule.

Finetuning: one LM row per sample (head, placeholders, tail) and one encoder row per chunk
that selects at least one index; chunks without indices are dropped as the reference does.

Packed window mode (the default) runs the whole document as ONE LM row
`[C_0 .. C_{n-2}, W_1 .. W_{n-1}]`: C_i holds the encoder states Z_i, W_k the raw tokens of
window k. A block mask lets W_k see C_<k (its positions continue after them) and itself
causally, and lets C tokens see earlier C tokens causally. The hidden state of the last
vector of C_{k-1} sees exactly what the reference's last memory position of window k sees,
so it carries the target W_k[0]; the loss equals the loop's while the compressed prefix is
computed once instead of once per window.

Loss weights reproduce the reference reduction exactly (METHOD §3.5, A15): a token mean
within a sample (across all windows in window mode), then a mean over the samples of the
global batch. Each token of sample j gets `scale / valid_j`; the trainer picks `scale` so
that Megatron's averaging over micro-batches and data-parallel ranks ends at that mean.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from acerag_megatron import IGNORE_INDEX, PRETRAIN_PLACEHOLDER_TOKEN_ID
from acerag_megatron.models.packed_mask import allowed_pairs, packed_mask
from acerag_megatron.training.micro_batch import Accounting, MicroBatch, ModelInputs



@dataclass
class _Rows:
    """Variable-length rows padded into a [B, S] tensor, with a flat-index helper."""

    rows: list[np.ndarray]
    pad_id: int
    multiple: int = 1
    """Sequence parallelism splits the sequence over TP ranks: pad the width to a multiple."""

    @property
    def width(self) -> int:
        w = max((len(r) for r in self.rows), default=0)
        return -(-w // self.multiple) * self.multiple

    def ids(self) -> torch.Tensor:
        out = np.full((len(self.rows), max(self.width, 1)), self.pad_id, dtype=np.int64)
        for b, r in enumerate(self.rows):
            out[b, : len(r)] = r
        return torch.from_numpy(out)

    def positions(self) -> torch.Tensor:
        w = max(self.width, 1)
        return torch.arange(w, dtype=torch.long).unsqueeze(0).expand(len(self.rows), w).contiguous()

    def flat(self, row: int, pos: np.ndarray) -> np.ndarray:
        return row * max(self.width, 1) + np.asarray(pos, dtype=np.int64)


def predicted_tokens(batch: MicroBatch) -> int:
    """Positions of a micro-batch with a target."""
    return int((batch.inputs.labels != IGNORE_INDEX).sum())


def _indices(parts: list[np.ndarray]) -> torch.Tensor:
    """Index arrays concatenated into one long tensor (empty when there are none)."""
    return torch.from_numpy(np.concatenate(parts).astype(np.int64)) if parts else torch.zeros(0, dtype=torch.long)


def _pack(lm: _Rows, enc: _Rows, gather: list[np.ndarray], splice: list[np.ndarray],
          labels: list[np.ndarray], weights: list[float], num_samples: int, scale: float) -> MicroBatch:
    """Common tail of the row collators: shifted labels, per-token weights, flat indices."""
    ids = lm.ids()
    lab = torch.full_like(ids, IGNORE_INDEX)
    wts = torch.zeros(ids.shape, dtype=torch.float32)
    for b, (row_labels, w) in enumerate(zip(labels, weights)):
        n = len(row_labels)
        # labels[t] is the target predicted at position t (next-token shift of HF labels).
        lab[b, : n - 1] = torch.from_numpy(row_labels[1:].astype(np.int64))
        wts[b, : n - 1] = w
    wts[lab == IGNORE_INDEX] = 0.0
    return MicroBatch(
        ModelInputs(enc_input_ids=enc.ids(), enc_position_ids=enc.positions(), enc_attention_mask=None,
                    enc_gather_index=_indices(gather), lm_input_ids=ids, lm_position_ids=lm.positions(),
                    lm_attention_mask=None, splice_index=_indices(splice), labels=lab),
        Accounting(loss_weight=wts, loss_scale=scale, num_samples=num_samples,
                   report_group=torch.arange(ids.shape[0]).unsqueeze(1).expand_as(ids).contiguous(),
                   enc_real_lengths=[len(r) for r in enc.rows], lm_real_lengths=[len(r) for r in lm.rows]))


def collate_window(sample, pad_id: int, scale: float = 1.0, multiple: int = 1) -> MicroBatch:
    """One window-mode document (a WindowSample) -> one micro-batch (batched per-window loop)."""
    tokens = np.asarray(sample.tokens, dtype=np.int64)
    enc = _Rows([tokens[s:e] for s, e in sample.groups], pad_id, multiple)
    z_rows = _window_selection_rows(sample, enc)
    lm_rows, labels, gather, splice_pos = [], [], [], []
    for k in range(1, len(sample.segments)):
        s, e = sample.segments[k]
        mem = np.concatenate(z_rows[:k]) if k else np.zeros(0, np.int64)
        mu = len(mem)
        lm_rows.append(np.concatenate([np.full(mu, PRETRAIN_PLACEHOLDER_TOKEN_ID, np.int64), tokens[s:e]]))
        labels.append(np.concatenate([np.full(mu, IGNORE_INDEX, np.int64), tokens[s:e]]))
        gather.append(mem)
        splice_pos.append(np.arange(mu))
    lm = _Rows(lm_rows, pad_id, multiple)
    splice = [lm.flat(k, pos) for k, pos in enumerate(splice_pos)]
    valid = sum(int((lab[1:] != IGNORE_INDEX).sum()) for lab in labels)
    return _pack(lm, enc, gather, splice, labels, [scale / max(valid, 1)] * len(labels), 1, scale)


def collate_finetune(samples, pad_id: int, scale: float = 1.0, multiple: int = 1) -> MicroBatch:
    """A list of FinetuneSamples -> one micro-batch (one LM row per sample)."""
    enc_rows, enc_idx, lm_rows, labels, weights = [], [], [], [], []
    for smp in samples:
        for chunk, idx in zip(smp.encoder_chunks, smp.encoder_indices):
            if len(idx):
                enc_rows.append(np.asarray(chunk, dtype=np.int64))
                enc_idx.append(np.asarray(idx, dtype=np.int64))
        lm_rows.append(np.asarray(smp.input_ids, dtype=np.int64))
        lab = np.asarray(smp.labels, dtype=np.int64)
        labels.append(lab)
        weights.append(scale / max(int((lab[1:] != IGNORE_INDEX).sum()), 1))
    enc, lm = _Rows(enc_rows, pad_id, multiple), _Rows(lm_rows, pad_id, multiple)
    gather = [enc.flat(r, idx) for r, idx in enumerate(enc_idx)]
    splice = []
    for b, smp in enumerate(samples):
        p = sum(len(ix) for ix in smp.encoder_indices)
        splice.append(lm.flat(b, smp.placeholder_start + np.arange(p)))
    return _pack(lm, enc, gather, splice, labels, weights, len(samples), scale)


def _window_selection_rows(sample, enc: _Rows, first_row: int = 0) -> list[np.ndarray]:
    """Encoder-output row (flat index) of every selected position of each Z_i, in LM order; the
    sample's encoder groups are rows first_row.. of `enc`."""
    tokens_len = len(sample.tokens)
    group_of = np.empty(tokens_len, dtype=np.int64)
    start_of = np.empty(tokens_len, dtype=np.int64)
    for g, (s, e) in enumerate(sample.groups):
        group_of[s:e] = g
        start_of[s:e] = s
    out = []
    for sel in sample.selected:
        sel = np.asarray(sel, dtype=np.int64)
        out.append(enc.flat(first_row + group_of[sel], sel - start_of[sel]) if len(sel) else np.zeros(0, np.int64))
    return out


def window_packed_tokens(sample) -> int:
    """LM tokens of a window-mode document's packed row: its compressed prefix plus windows 1..n-1."""
    return sum(len(z) for z in sample.selected) + sum(e - s for s, e in sample.segments[1:])


def _window_row(sample, enc: _Rows, first_row: int) -> dict:
    """One document's packed row `[C_0 .. C_{n-2}, W_1 .. W_{n-1}]` (unpadded, local positions),
    its encoder groups being rows first_row.. of `enc`."""
    tokens = np.asarray(sample.tokens, dtype=np.int64)
    z_rows = _window_selection_rows(sample, enc, first_row)
    mem = np.concatenate(z_rows)
    c_len = len(mem)
    mu = np.concatenate([[0], np.cumsum([len(z) for z in z_rows])]).astype(np.int64)  # mu[k] = |C_<k|
    windows = [tokens[s:e] for s, e in sample.segments[1:]]
    total = c_len + sum(len(w) for w in windows)
    ids = np.full(total, PRETRAIN_PLACEHOLDER_TOKEN_ID, dtype=np.int64)
    pos = np.arange(total, dtype=np.int64)
    lab = np.full(total, IGNORE_INDEX, dtype=np.int64)
    group = np.zeros(total, dtype=np.int64)
    # Segment 0 is the compressed prefix (causal over itself); window k is segment k and also
    # sees C_<k (see models/packed_mask.py).
    segment = np.zeros(total, dtype=np.int64)
    prefix_end = np.zeros(total, dtype=np.int64)
    at = c_len
    for k, w in enumerate(windows, start=1):
        n = len(w)
        ids[at:at + n] = w
        pos[at:at + n] = mu[k] + np.arange(n)
        segment[at:at + n], prefix_end[at:at + n] = k, mu[k]
        # The last memory vector in front of window k predicts its first token.
        lab[mu[k] - 1], group[mu[k] - 1] = w[0], k - 1
        lab[at:at + n - 1], group[at:at + n - 1] = w[1:], k - 1
        at += n
    return dict(ids=ids, pos=pos, lab=lab, group=group, segment=segment, prefix_end=prefix_end, mem=mem,
                c_len=c_len, windows=len(windows))


def collate_window_packed(sample, pad_id: int, scale: float = 1.0, multiple: int = 1) -> MicroBatch:
    """One window-mode document -> a single packed LM row with the block mask (see module doc)."""
    return collate_window_packed_docs([sample], pad_id, scale, multiple)


def collate_window_packed_docs(samples, pad_id: int, scale: float = 1.0, multiple: int = 1) -> MicroBatch:
    """Window-mode documents -> ONE LM row of their packed rows back to back: each document's
    segments are its own and its windows' prefixes start where the document does, so no
    document sees another and each computes what its own row computes. Encoder groups of all
    documents are the encoder rows. Each document's tokens weigh `scale / valid` of its own."""
    tokens = [np.asarray(smp.tokens, dtype=np.int64) for smp in samples]
    enc = _Rows([t[s:e] for t, smp in zip(tokens, samples) for s, e in smp.groups], pad_id, multiple)
    first_rows = np.concatenate([[0], np.cumsum([len(smp.groups) for smp in samples])[:-1]])
    docs = [_window_row(smp, enc, int(r)) for smp, r in zip(samples, first_rows)]
    total = sum(len(d["ids"]) for d in docs)
    width = -(-total // multiple) * multiple
    ids = np.full(width, pad_id, dtype=np.int64)
    pos = np.arange(width, dtype=np.int64)
    lab = np.full(width, IGNORE_INDEX, dtype=np.int64)
    group = np.zeros(width, dtype=np.int64)
    wts = np.zeros(width, dtype=np.float32)
    segment = -1 - np.arange(width, dtype=np.int64)  # each pad token is its own segment
    prefix_start = np.zeros(width, dtype=np.int64)
    prefix_end = np.zeros(width, dtype=np.int64)
    splice, at, segment_base, group_base = [], 0, 0, 0
    for d in docs:
        n, span = len(d["ids"]), slice(at, at + len(d["ids"]))
        ids[span], pos[span], lab[span] = d["ids"], d["pos"], d["lab"]
        group[span], segment[span] = d["group"] + group_base, d["segment"] + segment_base
        windowed = d["prefix_end"] > 0  # compressed-prefix tokens see no prefix
        prefix_start[span] = np.where(windowed, at, 0)
        prefix_end[span] = np.where(windowed, at + d["prefix_end"], 0)
        valid = d["lab"] != IGNORE_INDEX
        wts[span] = np.where(valid, scale / max(int(valid.sum()), 1), 0.0)
        splice.append(at + np.arange(d["c_len"]))
        at, segment_base, group_base = at + n, segment_base + d["windows"] + 1, group_base + d["windows"]
    return MicroBatch(
        ModelInputs(enc_input_ids=enc.ids(), enc_position_ids=enc.positions(), enc_attention_mask=None,
                    enc_gather_index=_indices([d["mem"] for d in docs]),
                    lm_input_ids=torch.from_numpy(ids).unsqueeze(0), lm_position_ids=torch.from_numpy(pos).unsqueeze(0),
                    lm_attention_mask=packed_mask(segment, prefix_end, prefix_start), splice_index=_indices(splice),
                    labels=torch.from_numpy(lab).unsqueeze(0)),
        Accounting(loss_weight=torch.from_numpy(wts).unsqueeze(0), loss_scale=scale, num_samples=len(samples),
                   report_group=torch.from_numpy(group).unsqueeze(0),
                   enc_real_lengths=[len(r) for r in enc.rows], lm_real_lengths=[total],
                   lm_attention_pairs=allowed_pairs(segment[:total], prefix_end[:total], prefix_start[:total])))


def collate_finetune_packed(samples, pad_id: int, scale: float = 1.0, multiple: int = 1) -> MicroBatch:
    """Several FinetuneSamples -> ONE LM row and ONE encoder row, each with a document mask (no
    padding between samples or chunks).

    Each sample (each encoder chunk) keeps its own positions from 0 and sees only itself,
    causally, so the rows compute exactly what one row per sample (per chunk) computes. Labels
    and weights follow collate_finetune: next-token shift, `scale / valid` per sample.
    """
    chunks, chunk_idx = [], []  # the chunks that select at least one index, in collate_finetune's order
    for smp in samples:
        for chunk, idx in zip(smp.encoder_chunks, smp.encoder_indices):
            if len(idx):
                chunks.append(chunk)
                chunk_idx.append(np.asarray(idx, dtype=np.int64))
    enc_ids, enc_pos, enc_mask, enc_starts = _document_row(chunks, pad_id, multiple)
    ids, pos, mask, starts = _document_row([s.input_ids for s in samples], pad_id, multiple)
    lab = torch.full((ids.shape[1],), IGNORE_INDEX, dtype=torch.long)
    wts = torch.zeros(ids.shape[1], dtype=torch.float32)
    group = torch.zeros(ids.shape[1], dtype=torch.long)
    splice = []
    for b, (smp, at) in enumerate(zip(samples, starts)):
        n, targets = len(smp.input_ids), np.asarray(smp.labels, dtype=np.int64)[1:]
        lab[at:at + n - 1] = torch.from_numpy(targets)
        valid = targets != IGNORE_INDEX
        wts[at:at + n - 1] = torch.from_numpy(np.where(valid, scale / max(int(valid.sum()), 1), 0.0))
        group[at:at + n] = b
        p = sum(len(ix) for ix in smp.encoder_indices)
        splice.append(at + smp.placeholder_start + np.arange(p))
    lengths = [len(s.input_ids) for s in samples]
    return MicroBatch(
        ModelInputs(enc_input_ids=enc_ids, enc_position_ids=enc_pos, enc_attention_mask=enc_mask,
                    enc_gather_index=_indices([s + idx for s, idx in zip(enc_starts, chunk_idx)]),
                    lm_input_ids=ids, lm_position_ids=pos, lm_attention_mask=mask, splice_index=_indices(splice),
                    labels=lab.unsqueeze(0)),
        Accounting(loss_weight=wts.unsqueeze(0), loss_scale=scale, num_samples=len(samples),
                   report_group=group.unsqueeze(0), enc_real_lengths=[len(c) for c in chunks],
                   lm_real_lengths=lengths, lm_attention_pairs=sum(n * (n + 1) // 2 for n in lengths)))


def _document_row(docs, pad_id: int, multiple: int):
    """Documents back to back in one row padded to a multiple: ids [1, W], positions from 0 in
    each document [1, W], the packed-mask spec (document j is segment j, each pad token its own)
    and every document's start."""
    lengths = [len(d) for d in docs]
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64) if docs else np.zeros(0, np.int64)
    width = max(-(-sum(lengths) // multiple) * multiple, 1)
    ids = np.full(width, pad_id, dtype=np.int64)
    pos = np.arange(width, dtype=np.int64)
    segment = -1 - np.arange(width, dtype=np.int64)
    for j, (doc, at, n) in enumerate(zip(docs, starts, lengths)):
        ids[at:at + n], pos[at:at + n], segment[at:at + n] = doc, np.arange(n), j
    return (torch.from_numpy(ids).unsqueeze(0), torch.from_numpy(pos).unsqueeze(0),
            packed_mask(segment, np.zeros(width, dtype=np.int64)), starts)


def group_by_tokens(samples, max_tokens: int, length=lambda smp: len(smp.input_ids)) -> list[list]:
    """Consecutive samples grouped into micro-batches of at most max_tokens LM tokens, as
    `length` counts them (a longer sample goes alone)."""
    groups, current, used = [], [], 0
    for smp in samples:
        n = length(smp)
        if current and used + n > max_tokens:
            groups.append(current)
            current, used = [], 0
        current.append(smp)
        used += n
    if current:
        groups.append(current)
    return groups
