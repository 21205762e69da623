"""Loss reduction matching the reference: token mean per sample, mean over samples.

The collator weights each token by `scale / valid_tokens_of_its_sample`. Megatron's schedule
divides each micro-batch loss by the number of micro-batches M (this rank's: token-budget
packing may give ranks different counts), and DDP averages gradients over the data-parallel
size D, so the trainer uses `scale = M * D / G` (G = samples in the global batch): the gradient is then exactly that of mean-over-samples of per-sample token
means, whatever the number of samples per micro-batch.
"""
from __future__ import annotations

import torch

from acerag_megatron import IGNORE_INDEX
from acerag_megatron.training.micro_batch import MicroBatch


def loss_scale(num_microbatches: int, dp_size: int, global_samples: int) -> float:
    return num_microbatches * dp_size / global_samples


def make_loss_func(batch: MicroBatch):
    """Return Megatron's loss_func for one micro-batch (called on the last pipeline stage).

    The weights, the target mask and the report groups stay where the collator built them
    (MicroBatch.inputs alone goes to the device) and follow the loss to its device here.
    """
    acc = batch.accounting
    scale = acc.loss_scale
    weights = acc.loss_weight
    mask = (batch.inputs.labels != IGNORE_INDEX).float()
    groups = acc.report_group

    def loss_func(per_token_loss: torch.Tensor):
        ce = per_token_loss.float()
        w = weights.to(ce.device)
        loss = (ce * w).sum()
        m = mask.to(ce.device)
        # Reported values, independent of the scaling: sum of per-sample means, and the mean
        # loss per report group (a window in window mode, a row otherwise).
        sample_mean_sum = (ce * w).sum().detach() / scale
        group = groups.to(ce.device).reshape(-1)
        n = int(group.max()) + 1 if group.numel() else 0
        sums = torch.zeros(n, device=ce.device).index_add_(0, group, (ce * m).detach().reshape(-1))
        counts = torch.zeros(n, device=ce.device).index_add_(0, group, m.reshape(-1))
        group_loss = sums / counts.clamp(min=1)
        return loss, {"sample_mean_sum": sample_mean_sum, "row_loss": group_loss,
                      "num_samples": torch.tensor(float(acc.num_samples))}

    return loss_func
