"""Estimated step cost of a sample from its stored length alone (the index; no token is read),
with the FLOP model of training/flops.py: what length grouping sorts by and what the
data-parallel efficiency of a step is measured in."""
from __future__ import annotations

import numpy as np

from acerag_megatron.training.flops import step_flops


def window_cost(length: int, window: int, comp_candidates, lm_arch, enc_arch, enc_layers: int) -> float:
    """Expected model FLOPs of a window-mode document of `length` tokens (packed single pass).

    The encoder reads every token; windows 1..n-1 are predicted, each after the compressed
    states of the windows before it (window x mean(1/ratio) states per window).
    """
    n = -(-length // window)
    per_window = window * float(np.mean([1.0 / r for r in comp_candidates]))
    prefix = (n - 1) * per_window
    windows = [min(window, length - k * window) for k in range(1, n)]
    pairs = prefix * (prefix + 1) / 2 + sum(w * (w + 1) / 2 + w * k * per_window for k, w in enumerate(windows, 1))
    return step_flops(lm_arch, enc_arch, enc_layers, [length], [int(prefix + sum(windows))], sum(windows), int(pairs))


def finetune_cost(length: int, lm_max_length: int, lm_arch, enc_arch, enc_layers: int) -> float:
    """Model FLOPs bound of a finetune sample of `length` stored tokens: the encoder reads the
    context (at most the sample), the LM at most its truncation budget."""
    lm = min(length, lm_max_length)
    return step_flops(lm_arch, enc_arch, enc_layers, [length], [lm], lm)


def sample_costs(dataset, args, lm_arch, enc_arch) -> np.ndarray:
    """Estimated cost of every sample from its stored length (the index; no token is read)."""
    lengths = np.asarray(dataset.lengths, dtype=np.int64)
    layers = args.encoder_num_hidden_layers
    if args.window_mode:
        cost = {int(n): window_cost(int(n), args.window, args.comp_candidates, lm_arch, enc_arch, layers)
                for n in np.unique(lengths)}
    else:
        cost = {int(n): finetune_cost(int(n), args.lm_max_length, lm_arch, enc_arch, layers) for n in np.unique(lengths)}
    return np.array([cost[int(n)] for n in lengths], dtype=np.float64)
