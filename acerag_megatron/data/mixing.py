"""Per-file down- and up-sampling of the multi-task mix (METHOD.md 5), deterministic in the seed."""
from __future__ import annotations

import numpy as np


def target_count(index: int, data_splits: list[float] | None, train_num_per_data: int | None) -> int | None:
    """Number of records file `index` should contribute, or None to use it as is."""
    if train_num_per_data is None:
        return None
    if data_splits and index < len(data_splits):
        return int(train_num_per_data * data_splits[index])
    return train_num_per_data


def resample_indices(n: int, index: int, data_splits: list[float] | None, train_num_per_data: int | None,
                     seed: int) -> np.ndarray:
    """Record indices of file `index` (of n records) after AceRAG's resampling.

    - no `train_num_per_data`: all records;
    - n > target: a seeded random subset of exactly `target` records (kept in file order);
    - n < target and `data_splits` given: floor(target / n) full copies plus target mod n records of a
      seeded shuffle;
    - otherwise: all records.
    """
    target = target_count(index, data_splits, train_num_per_data)
    everything = np.arange(n, dtype=np.int64)
    if target is None or n == 0:
        return everything
    rng = np.random.default_rng([seed, index])
    if n > target:
        return np.sort(rng.permutation(n)[:target])
    if n < target and data_splits:
        copies, remainder = divmod(target, n)
        return np.concatenate([np.tile(everything, copies), rng.permutation(n)[:remainder]])
    return everything
