"""Check a Megatron checkpoint (a hf_to_megatron output or a trainer's `checkpoint-N/megatron`)
against transformers: max abs difference of logits (LM) or of the final hidden states (encoder,
HF model truncated to N layers) on random tokens, in float32.

Exits 1 when the difference exceeds --tolerance. Run:
  torchrun --nproc-per-node 2 -m checkpoints_convert.verify --hf-path DIR --megatron-path DIR --pp 2
"""
from __future__ import annotations

import sys

from checkpoints_convert._cli import add_parallel_args, check_parallel, finish, make_parser, run, start


def preflight(args) -> None:
    """Every user mistake, found before any process group or model is built."""
    from acerag_megatron.preflight import check_same_model, check_weight_files, fail, read_arch
    from acerag_megatron.weights.checkpoint_info import read_checkpoint_info

    info = read_checkpoint_info(args.megatron_path)
    if args.role is not None and args.role != info.role:
        fail(f"--role {args.role}: {args.megatron_path} holds the {info.role}")
    reference = read_arch(args.hf_path, "--hf-path")
    check_weight_files(args.hf_path, "--hf-path")
    check_same_model(reference, f"--hf-path {args.hf_path}", info.arch,
                     f"the {info.role} in --megatron-path {args.megatron_path}")
    # The LM is compared whole; the encoder against the reference's first N layers.
    if reference.num_layers < info.num_layers or (info.role == "lm" and reference.num_layers != info.num_layers):
        fail(f"--hf-path {args.hf_path}: has {reference.num_layers} layers, the {info.role} in "
             f"--megatron-path {info.num_layers}")
    check_parallel(info.arch, args.megatron_path, args, info.num_layers if info.role == "lm" else None)
    if args.seq_length < 1:
        fail(f"--seq-length {args.seq_length}: must be >= 1")


def check(argv) -> None:
    parser = make_parser(__doc__)
    parser.add_argument("--hf-path", required=True, help="reference HF folder")
    parser.add_argument("--megatron-path", required=True, help="torch_dist checkpoint (hf_to_megatron or trainer)")
    parser.add_argument("--role", choices=("lm", "encoder"), default=None,
                        help="expected role (default: the one recorded in the checkpoint)")
    parser.add_argument("--tolerance", type=float, default=1e-4, help="largest accepted max abs difference")
    parser.add_argument("--seq-length", type=int, default=32, help="tokens per test sequence")
    add_parallel_args(parser)
    args = parser.parse_args(argv)
    preflight(args)
    device = start(args)
    import torch.distributed as dist

    from acerag_megatron.weights.convert import compare_with_hf, load_converted

    module, _, role, num_layers = load_converted(args.megatron_path, tp=args.tp, pp=args.pp, device=device)
    diff = compare_with_hf(module, args.hf_path, role, num_layers, seq_length=args.seq_length)
    ok = diff <= args.tolerance
    if dist.get_rank() == 0:
        what = "logits" if role == "lm" else "hidden states"
        print(f"verify {role}: max abs diff of {what} = {diff:.3e} (tolerance {args.tolerance:.1e}) "
              f"{'OK' if ok else 'FAILED'}", flush=True)
    finish()
    sys.exit(0 if ok else 1)


def main(argv=None) -> None:
    """Console script and `-m` entry: argv (default sys.argv[1:]); a user mistake ends as one `error:` line
    from rank 0."""
    run(check, argv)


if __name__ == "__main__":
    main()
