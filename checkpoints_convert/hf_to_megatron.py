"""Convert an HF model folder into a Megatron torch_dist checkpoint (LM or compressive encoder).

Weights are stored in the source's dtype by default (--dtype auto), so megatron_to_hf gives
the same tensors back bit for bit. Run (the checkpoint reshards on load, so any TP/PP may read it later):
  torchrun --nproc-per-node 2 -m checkpoints_convert.hf_to_megatron --hf-path DIR --output DIR --tp 2
  torchrun --nproc-per-node 1 -m checkpoints_convert.hf_to_megatron --hf-path DIR --output DIR --role encoder --num-layers 8
"""
from __future__ import annotations

from checkpoints_convert._cli import add_output_args, add_parallel_args, check_parallel, finish, make_parser, run, start

DTYPES = ("auto", "bfloat16", "float16", "float32")


def preflight(args) -> None:
    """Every user mistake, found before any process group or model is built."""
    from acerag_megatron.preflight import check_output_dir, check_weight_files, fail, read_arch
    from acerag_megatron.weights.checkpoint_info import is_hf_to_megatron_output

    arch = read_arch(args.hf_path, "--hf-path")
    check_weight_files(args.hf_path, "--hf-path")
    num_layers = args.num_layers or arch.num_layers
    if args.num_layers is not None and not 1 <= args.num_layers <= arch.num_layers:
        fail(f"--num-layers {args.num_layers}: must be between 1 and the {arch.num_layers} layers of {args.hf_path}")
    check_parallel(arch, args.hf_path, args, num_layers if args.role == "lm" else None)
    check_output_dir(args.output, {"--hf-path": args.hf_path}, is_earlier_output=is_hf_to_megatron_output,
                     overwrite=args.overwrite, tool="hf_to_megatron")


def convert(argv) -> None:
    parser = make_parser(__doc__)
    parser.add_argument("--hf-path", required=True, help="HF folder or hub id (offline: must be cached)")
    add_output_args(parser, "torch_dist")
    parser.add_argument("--role", choices=("lm", "encoder"), default="lm", help="what to build from the checkpoint")
    parser.add_argument("--num-layers", type=int, default=None,
                        help="layers to keep (encoder: its depth N; default: all layers)")
    parser.add_argument("--dtype", choices=DTYPES, default="auto",
                        help="storage dtype (auto: the source config's, else its weights')")
    add_parallel_args(parser)
    args = parser.parse_args(argv)
    preflight(args)
    device = start(args)
    from acerag_megatron.weights.convert import hf_to_megatron

    hf_to_megatron(args.hf_path, args.output, role=args.role, num_layers=args.num_layers, tp=args.tp, pp=args.pp,
                   device=device, dtype=args.dtype)
    finish()


def main(argv=None) -> None:
    """Console script and `-m` entry: argv (default sys.argv[1:]); a user mistake ends as one `error:` line
    from rank 0."""
    run(convert, argv)


if __name__ == "__main__":
    main()
