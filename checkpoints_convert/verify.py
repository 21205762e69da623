"""Check a Megatron checkpoint against transformers: max abs difference of logits (LM) or of the
final hidden states (encoder, HF model truncated to N layers) on random tokens, in float32.

Exits 1 when the difference exceeds --tolerance. Run:
  torchrun --nproc-per-node 2 -m checkpoints_convert.verify --hf-path DIR --megatron-path DIR --pp 2
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
    parser.add_argument("--hf-path", required=True, help="reference HF folder")
    parser.add_argument("--megatron-path", required=True, help="torch_dist checkpoint written by hf_to_megatron")
    parser.add_argument("--role", choices=("lm", "encoder"), default=None,
                        help="expected role (default: the one recorded in the checkpoint)")
    parser.add_argument("--tolerance", type=float, default=1e-4, help="largest accepted max abs difference")
    parser.add_argument("--seq-length", type=int, default=32, help="tokens per test sequence")
    add_parallel_args(parser)
    args = parser.parse_args(argv)
    device = start(args)
    import torch.distributed as dist

    from acerag_megatron.weights.convert import compare_with_hf, load_converted

    module, _, role, num_layers = load_converted(args.megatron_path, tp=args.tp, pp=args.pp, device=device)
    if args.role is not None and args.role != role:
        raise SystemExit(f"error: {args.megatron_path}/acerag_info.json: field role={role!r}, --role {args.role}")
    diff = compare_with_hf(module, args.hf_path, role, num_layers, seq_length=args.seq_length)
    ok = diff <= args.tolerance
    if dist.get_rank() == 0:
        what = "logits" if role == "lm" else "hidden states"
        print(f"verify {role}: max abs diff of {what} = {diff:.3e} (tolerance {args.tolerance:.1e}) "
              f"{'OK' if ok else 'FAILED'}", flush=True)
    finish()
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
