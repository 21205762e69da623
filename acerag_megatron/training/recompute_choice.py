"""What the seed's `--gradient_checkpointing` means here: the cheapest recompute choice whose
memory estimate fits the largest micro-batch the data can produce, on the device at hand.

The seed sets the flag on every run to fit DeepSpeed's memory; full recompute of both models
costs about a third of the step (5,345 vs 8,348 tokens/s on the Llama-2-7B 8192-token sample,
one H200), while recomputing the small trainable encoder costs a few percent. An explicit
`--recompute*` flag always wins over this choice.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from acerag_megatron.training.memory_estimate import FIT_LADDER

HEADROOM = 0.92  # share of the capacity an estimate may use (allocator overhead, CUDA context)


@dataclasses.dataclass(frozen=True)
class MicroBatchShape:
    lm_tokens: int
    enc_tokens: int
    predicted: int


class _SmallestRatio:
    """numpy-Generator stand-in drawing the smallest ratio: the most compressed states, so the
    longest packed LM row a document can produce."""

    def __init__(self):
        self._rng = np.random.default_rng(0)

    def choice(self, candidates):
        return min(candidates)

    def permutation(self, n):
        return self._rng.permutation(n)


def longest_micro_batch(args) -> MicroBatchShape:
    """Token counts of the largest micro-batch the run's length limits allow.

    Window mode: the packed row of a document just under --max_length at the smallest ratio,
    built by the real sample and collate code, or a full --max_tokens_per_micro_batch row of
    packed documents where that is longer. Finetuning: per-device rows of --lm_max_length
    (or one packed row of --max_tokens_per_micro_batch), every LM token predicted, and as many
    context tokens as the largest ratio compresses into them, below --max_length each.
    """
    if args.window_mode:
        from acerag_megatron.data.window import build_window_sample
        from acerag_megatron.training.collate import collate_window_packed, predicted_tokens

        length = max(args.max_length - 1, args.window + 1)
        sample = build_window_sample(np.full(length, 3), window=args.window,
                                     encoder_max_length=args.encoder_max_length, comp_candidates=args.comp_candidates,
                                     method="stride", rng=_SmallestRatio())
        mb = collate_window_packed(sample, 0)
        longest = MicroBatchShape(int(mb.inputs.lm_input_ids.numel()), int(mb.inputs.enc_input_ids.numel()),
                                  predicted_tokens(mb))
        if args.max_tokens_per_micro_batch > longest.lm_tokens:
            # Packed documents fill the budget; a document's encoder tokens never exceed its LM tokens.
            budget = args.max_tokens_per_micro_batch
            return MicroBatchShape(budget, budget, budget)
        return longest
    rows = args.per_device_train_batch_size
    lm = args.max_tokens_per_micro_batch if args.max_tokens_per_micro_batch > 0 else rows * args.lm_max_length
    samples = max(1, lm // max(args.lm_max_length, 1)) if args.max_tokens_per_micro_batch > 0 else rows
    context = min(args.max_length, max(args.comp_candidates) * args.lm_max_length)
    return MicroBatchShape(lm, samples * context, lm)


def fit_ladder(te_layers: bool) -> tuple[tuple[str, str], ...]:
    """The (recompute_lm, recompute_encoder) rungs these layers can run, cheapest first: fc1
    recompute lives in our SwiGLU MLP, which Transformer Engine's layers replace."""
    return tuple(rung for rung in FIT_LADDER if not (te_layers and "fc1" in rung))


def choose_recompute(estimate_for, capacity_gib: float, te_layers: bool) -> tuple[tuple[str, str], str]:
    """((recompute_lm, recompute_encoder), reason): the first rung of the fit ladder whose
    estimate fits `capacity_gib`; full recompute of both when none does."""
    for rung in fit_ladder(te_layers):
        need = estimate_for(*rung).total
        if need <= HEADROOM * capacity_gib:
            return rung, f"estimated {need:.1f} GiB of {capacity_gib:.1f} GiB"
    need = estimate_for("full", "full").total
    return ("full", "full"), f"estimated {need:.1f} GiB of {capacity_gib:.1f} GiB even with full recompute, may not fit"
