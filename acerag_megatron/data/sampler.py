"""Data-parallel micro-batch sampler over a seeded per-epoch shuffle, resumable from a global sample count."""
from __future__ import annotations

from typing import Iterator

import numpy as np

from acerag_megatron.data.length_grouping import grouped_order


class DistributedBatchSampler:
    """Yields (epoch, indices) micro-batches for one data-parallel rank.

    Every step consumes one global batch of `micro_batch_size * dp_size` samples of the epoch's
    order; rank k takes its slice. The incomplete last global batch of an epoch is dropped so all
    ranks take the same number of steps. Iteration runs over epochs without end (the trainer stops it).
    """

    def __init__(self, num_samples: int, *, dp_rank: int, dp_size: int, micro_batch_size: int, seed: int,
                 shuffle: bool = True, consumed_samples: int = 0, costs: np.ndarray | None = None,
                 megabatch: int = 50):
        """costs: per-sample step costs; given, global batches are length-grouped within
        mega-batches of `megabatch` global batches and balanced over ranks (data/length_grouping.py)."""
        if not 0 <= dp_rank < dp_size:
            raise ValueError(f"dp_rank {dp_rank} out of range for dp_size {dp_size}")
        self.num_samples = num_samples
        self.dp_rank, self.dp_size = dp_rank, dp_size
        self.micro_batch_size = micro_batch_size
        self.seed, self.shuffle = seed, shuffle
        self.consumed_samples = consumed_samples
        self.global_batch_size = micro_batch_size * dp_size
        if costs is not None and len(costs) != num_samples:
            raise ValueError(f"{len(costs)} costs for {num_samples} samples")
        if megabatch < 1:
            raise ValueError(f"megabatch {megabatch}: must be >= 1")
        self.costs, self.megabatch = costs, megabatch
        if self.steps_per_epoch == 0:
            raise ValueError(f"{num_samples} samples are fewer than one global batch of {self.global_batch_size}")

    @property
    def steps_per_epoch(self) -> int:
        """Micro-batch steps per epoch (same on every rank)."""
        return self.num_samples // self.global_batch_size

    @property
    def samples_per_epoch(self) -> int:
        """Samples consumed per epoch over all ranks."""
        return self.steps_per_epoch * self.global_batch_size

    def epoch_order(self, epoch: int) -> np.ndarray:
        """Global sample order of an epoch (its first samples_per_epoch entries are trained)."""
        if not self.shuffle:
            order = np.arange(self.num_samples)
        else:
            order = np.random.default_rng([self.seed, epoch]).permutation(self.num_samples)
        if self.costs is None:
            return order
        # The samples the plain order trains, regrouped: the epoch's sample set does not change.
        return grouped_order(order[:self.samples_per_epoch], self.costs, self.global_batch_size, self.dp_size,
                             self.megabatch, np.random.default_rng([self.seed, epoch, 1]))

    def __len__(self) -> int:
        return self.steps_per_epoch

    def __iter__(self) -> Iterator[tuple[int, list[int]]]:
        while True:
            epoch, offset = divmod(self.consumed_samples, self.samples_per_epoch)
            order = self.epoch_order(epoch)
            for start in range(offset, self.samples_per_epoch, self.global_batch_size):
                lo = start + self.dp_rank * self.micro_batch_size
                batch = [int(i) for i in order[lo:lo + self.micro_batch_size]]
                self.consumed_samples += self.global_batch_size
                yield epoch, batch

    def state_dict(self) -> dict:
        """Everything needed to resume: pass `consumed_samples` back to the constructor."""
        return {"consumed_samples": self.consumed_samples, "seed": self.seed, "shuffle": self.shuffle,
                "num_samples": self.num_samples, "global_batch_size": self.global_batch_size}

    def load_state_dict(self, state: dict) -> None:
        """Resume from `state_dict()` output (the dp layout may differ; the global count is what matters)."""
        self.consumed_samples = int(state["consumed_samples"])
