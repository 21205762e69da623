"""megatron-core's torch_dist checkpoint format, written by threads of the training process.

megatron-core 0.16.1's torch_dist save forks one writer process per file and collects their
results through a multiprocessing Manager, a server process started at the first save that
lives on in the worker's process group. torchrun forwards SIGTERM to that group, so a
pre-emption kills the manager (and any writer) and the save it should trigger dies with
BrokenPipeError. Here torch.distributed.checkpoint's FileSystemWriter writes the same files
from threads: nothing but the worker itself can receive the signal, and the files, metadata
and loader are megatron-core's own.
"""
from __future__ import annotations

from pathlib import Path
from typing import Union

import torch.distributed.checkpoint as dcp
from megatron.core.dist_checkpointing.mapping import ShardedStateDict
from megatron.core.dist_checkpointing.strategies.torch import (MCoreSavePlanner, TorchDistSaveShardedStrategy,
                                                               _replace_state_dict_keys_with_sharded_keys,
                                                               mcore_to_pyt_state_dict)


class InProcessTorchDistSave(TorchDistSaveShardedStrategy):
    """Synchronous torch_dist save with `thread_count` writer threads (files per rank)."""

    def __init__(self, thread_count: int = 2):
        super().__init__("torch_dist", 1, thread_count=thread_count)

    def async_save(self, sharded_state_dict, checkpoint_dir):
        # The parent's async path is the forking writer this class exists to avoid.
        raise NotImplementedError("InProcessTorchDistSave saves synchronously only")

    def save(self, sharded_state_dict: ShardedStateDict, checkpoint_dir: Union[str, Path]):
        sharded_state_dict, _, _ = _replace_state_dict_keys_with_sharded_keys(
            sharded_state_dict, self.keep_only_main_replica)
        dcp.save(mcore_to_pyt_state_dict(sharded_state_dict, False),
                 storage_writer=dcp.FileSystemWriter(str(checkpoint_dir), thread_count=self.thread_count),
                 planner=MCoreSavePlanner(dedup_replicated_tensors=not self.keep_only_main_replica,
                                          flatten_state_dict=False))
