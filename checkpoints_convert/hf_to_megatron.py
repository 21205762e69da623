"""Convert an HF model folder into a Megatron torch_dist checkpoint (LM or compressive encoder).

Run (the checkpoint reshards on load, so any TP/PP may read it later):
  torchrun --nproc-per-node 2 -m checkpoints_convert.hf_to_megatron --hf-path DIR --output DIR --tp 2
  torchrun --nproc-per-node 1 -m checkpoints_convert.hf_to_megatron --hf-path DIR --output DIR --role encoder --num-layers 8
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

if not __package__:  # run as a file (python checkpoints_convert/X.py): make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from checkpoints_convert._cli import add_parallel_args, finish, start


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hf-path", required=True, help="HF folder or hub id (offline: must be cached)")
    parser.add_argument("--output", required=True, help="destination folder (replaced atomically)")
    parser.add_argument("--role", choices=("lm", "encoder"), default="lm", help="what to build from the checkpoint")
    parser.add_argument("--num-layers", type=int, default=None,
                        help="layers to keep (encoder: its depth N; default: all layers)")
    add_parallel_args(parser)
    args = parser.parse_args(argv)
    device = start(args)
    from acerag_megatron.weights.convert import hf_to_megatron

    hf_to_megatron(args.hf_path, args.output, role=args.role, num_layers=args.num_layers, tp=args.tp, pp=args.pp,
                   device=device)
    finish()


if __name__ == "__main__":
    main()
