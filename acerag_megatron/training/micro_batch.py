"""One micro-batch from collate to loss: what the model reads, and what only the loss and the
step's accounting read.

The split decides what travels to the device: `ModelInputs.to(device)` moves the tensors the
model's forward reads, while `Accounting` stays where the collator built it (the loss moves
its two tensors itself on the last pipeline stage, the trainer reads the rest as numbers).
Megatron's schedules pass a MicroBatch through untouched: forward_step_func takes it from the
data iterator on every pipeline stage.

Shapes: B/Be batch, S/Se sequence, P spliced rows.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ModelInputs:
    """The tensors CompressiveModel.forward reads (models/compressive_model.py).

    Every pipeline stage reads lm_position_ids and lm_attention_mask; the first stage the enc_*
    fields, lm_input_ids and splice_index; the last stage labels. P may be 0 (the encoder is
    then skipped).

    Attributes:
        enc_input_ids: [Be, Se] long.
        enc_position_ids: [Be, Se] long.
        enc_attention_mask: None (causal), bool [Be, 1, Se, Se] (True = masked) or a
            packed-row spec long [Be, 2 or 3, Se] (models/packed_mask.py).
        enc_gather_index: [P] long, flat row b*Se+s of the encoder output.
        lm_input_ids: [B, S] long.
        lm_position_ids: [B, S] long.
        lm_attention_mask: None (causal), bool [B, 1, S, S] or a packed-row spec long [B, 2 or 3, S].
        splice_index: [P] long, flat row b*S+s of the LM input receiving the i-th gathered state.
        labels: [B, S] long, already shifted (labels[b, t] is predicted at t), IGNORE_INDEX = none.
    """

    enc_input_ids: torch.Tensor
    enc_position_ids: torch.Tensor
    enc_attention_mask: torch.Tensor | None
    enc_gather_index: torch.Tensor
    lm_input_ids: torch.Tensor
    lm_position_ids: torch.Tensor
    lm_attention_mask: torch.Tensor | None
    splice_index: torch.Tensor
    labels: torch.Tensor

    def to(self, device, non_blocking: bool = False) -> ModelInputs:
        """A copy with every tensor on `device` (absent masks stay None)."""
        tensors = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return ModelInputs(**{name: None if t is None else t.to(device, non_blocking=non_blocking)
                              for name, t in tensors.items()})


@dataclass(frozen=True)
class Accounting:
    """What the loss reduction and the step's throughput read besides the model's output.

    Attributes:
        loss_weight: [B, S] float32, the weight of each position's loss (`loss_scale / valid`
            tokens of its sample, 0 where labels is IGNORE_INDEX); see training/loss.py.
        loss_scale: the `scale` the weights were built with (reported losses divide it out).
        num_samples: samples in this micro-batch.
        report_group: [B, S] long, the reported group of each position (a window in window
            mode, a sample's row otherwise).
        enc_real_lengths: unpadded length of each encoder sequence (FLOP and token counts).
        lm_real_lengths: unpadded length of each LM sequence.
        lm_attention_pairs: attended (query, key) pairs of a packed LM row, or None where every
            row is plainly causal.
    """

    loss_weight: torch.Tensor
    loss_scale: float
    num_samples: int
    report_group: torch.Tensor
    enc_real_lengths: list[int]
    lm_real_lengths: list[int]
    lm_attention_pairs: int | None = None


@dataclass(frozen=True)
class MicroBatch:
    """One micro-batch of a training step: the model's inputs and the loss's accounting."""

    inputs: ModelInputs
    accounting: Accounting
