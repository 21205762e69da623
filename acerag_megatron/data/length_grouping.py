"""Length-grouped global batches: every data-parallel step waits for its slowest rank, so a
step's samples should cost about the same.

Within mega-batches of `megabatch` global batches of the epoch's shuffled order, samples are
sorted by estimated step cost and cut into global batches, whose order is then shuffled; inside
a global batch, samples go to ranks longest-processing-time first (each rank keeps its share
count, so micro-batch counts and the loss weighting stay as without grouping). The set of
samples per epoch is the one the plain shuffle uses; only their order changes. Everything is a
function of (seed, epoch, costs), so a resume from a consumed-sample count is exact. Costs
come from training/step_cost.py.
"""
from __future__ import annotations

import numpy as np


def balance(indices: np.ndarray, costs: np.ndarray, ranks: int) -> np.ndarray:
    """Reorder one global batch so rank r's contiguous share holds the samples given to it
    longest-processing-time first, each to the least-loaded rank with room left (equal counts)."""
    share = len(indices) // ranks
    loads = np.zeros(ranks)
    taken: list[list[int]] = [[] for _ in range(ranks)]
    for i in sorted(indices.tolist(), key=lambda i: -costs[i]):
        r = min((r for r in range(ranks) if len(taken[r]) < share), key=lambda r: loads[r])
        taken[r].append(i)
        loads[r] += costs[i]
    return np.array([i for r in range(ranks) for i in taken[r]], dtype=np.int64)


def grouped_order(order: np.ndarray, costs: np.ndarray, global_batch: int, ranks: int, megabatch: int,
                  rng: np.random.Generator) -> np.ndarray:
    """`order` (a multiple of global_batch long) regrouped into cost-sorted, balanced global batches."""
    out = []
    span = megabatch * global_batch
    for start in range(0, len(order), span):
        chunk = order[start:start + span]
        chunk = chunk[np.argsort(-costs[chunk], kind="stable")]
        batches = chunk.reshape(-1, global_batch)
        for b in rng.permutation(len(batches)):
            out.append(balance(batches[b], costs, ranks))
    return np.concatenate(out) if out else order[:0]


def dp_efficiency(rank_costs) -> float:
    """Useful work over what the step's wall time pays for: sum / (ranks x slowest rank)."""
    rank_costs = np.asarray(rank_costs, dtype=np.float64)
    top = rank_costs.max()
    return float(rank_costs.sum() / (len(rank_costs) * top)) if top > 0 else 1.0
