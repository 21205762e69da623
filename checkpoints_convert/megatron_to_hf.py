"""Convert a Megatron torch_dist checkpoint written by hf_to_megatron back into an HF folder.

The LM becomes a *ForCausalLM folder, the encoder a bare LlamaModel/Qwen3Model folder whose
config.json is the --hf-config-from config with num_hidden_layers = N.

Run:
  torchrun --nproc-per-node 1 -m checkpoints_convert.megatron_to_hf --megatron-path DIR --output DIR --hf-config-from DIR
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

if not __package__:  # run as a file (python checkpoints_convert/X.py): make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from checkpoints_convert._cli import add_parallel_args, finish, start

DTYPES = ("bfloat16", "float16", "float32")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--megatron-path", required=True, help="torch_dist checkpoint folder")
    parser.add_argument("--output", required=True, help="destination HF folder (replaced atomically)")
    parser.add_argument("--hf-config-from", required=True, help="HF folder or hub id whose config.json is used")
    parser.add_argument("--role", choices=("lm", "encoder"), default=None,
                        help="expected role (default: the one recorded in the checkpoint)")
    parser.add_argument("--dtype", choices=DTYPES, default="bfloat16", help="dtype of the written weights")
    add_parallel_args(parser)
    args = parser.parse_args(argv)
    import torch

    from acerag_megatron.weights.dist_ckpt import read_extra_info

    recorded = read_extra_info(args.megatron_path).get("role")
    if args.role is not None and recorded is not None and args.role != recorded:
        raise SystemExit(f"error: {args.megatron_path}/acerag_info.json: field role={recorded!r}, --role {args.role}")
    device = start(args)
    from acerag_megatron.weights.convert import megatron_to_hf

    megatron_to_hf(args.megatron_path, args.output, hf_config_from=args.hf_config_from, tp=args.tp, pp=args.pp,
                   device=device, dtype=getattr(torch, args.dtype))
    finish()


if __name__ == "__main__":
    main()
