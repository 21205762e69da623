"""Two ranks of one node load hub ids through resolve_on_each_node, then read a tensor each.

argv: repo ids. Environment: HF_ENDPOINT (tests/fake_hub.py), HF_HOME.
"""
import sys

import torch.distributed as dist

from acerag_megatron.weights.hf_folder import HFCheckpoint, find_prefix, resolve_on_each_node

if __name__ == "__main__":
    dist.init_process_group("gloo")
    repos = sys.argv[1:]
    resolve_on_each_node({f'repo{i}': repo for i, repo in enumerate(repos)})
    for repo in repos:
        checkpoint = HFCheckpoint(repo)
        name = find_prefix(checkpoint) + "embed_tokens.weight"
        print(f"rank {dist.get_rank()} {repo}: {tuple(checkpoint.get(name).shape)}", flush=True)
    dist.barrier()
    dist.destroy_process_group()
