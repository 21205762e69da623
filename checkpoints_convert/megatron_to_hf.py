"""Convert a Megatron torch_dist checkpoint back into an HF folder: a hf_to_megatron output, or a
trainer checkpoint's encoder (`checkpoint-N/megatron`, or `checkpoint-N`).

The LM becomes a *ForCausalLM folder, the encoder a bare LlamaModel/Qwen3Model folder whose
config.json is the --hf-config-from config with num_hidden_layers = N. --dtype auto writes the
dtype recorded in the source HF config (a trainer checkpoint's: that of its compressive_encoder/
export), so HF -> Megatron -> HF is bit-exact without flags.

Run:
  torchrun --nproc-per-node 1 -m checkpoints_convert.megatron_to_hf --megatron-path DIR --output DIR --hf-config-from DIR
"""
from __future__ import annotations

from checkpoints_convert._cli import add_output_args, add_parallel_args, check_parallel, finish, make_parser, run, start

DTYPES = ("auto", "bfloat16", "float16", "float32")


def preflight(args) -> None:
    """Every user mistake, found before any process group or model is built."""
    from acerag_megatron.preflight import check_output_dir, check_same_model, fail, read_arch
    from acerag_megatron.weights.checkpoint_info import read_checkpoint_info

    info = read_checkpoint_info(args.megatron_path)
    if args.role is not None and args.role != info.role:
        fail(f"--role {args.role}: {args.megatron_path} holds the {info.role}")
    config = read_arch(args.hf_config_from, "--hf-config-from")
    check_same_model(config, f"--hf-config-from {args.hf_config_from}", info.arch,
                     f"the {info.role} in --megatron-path {args.megatron_path}")
    check_parallel(info.arch, args.megatron_path, args, info.num_layers if info.role == "lm" else None)
    from acerag_megatron.weights.convert import is_megatron_to_hf_output

    check_output_dir(args.output, {"--megatron-path": args.megatron_path, "--hf-config-from": args.hf_config_from},
                     is_earlier_output=is_megatron_to_hf_output, overwrite=args.overwrite, tool="megatron_to_hf")


def convert(argv) -> None:
    parser = make_parser(__doc__)
    parser.add_argument("--megatron-path", required=True, help="torch_dist checkpoint folder")
    add_output_args(parser, "HF")
    parser.add_argument("--hf-config-from", required=True, help="HF folder or hub id whose config.json is used")
    parser.add_argument("--role", choices=("lm", "encoder"), default=None,
                        help="expected role (default: the one recorded in the checkpoint)")
    parser.add_argument("--dtype", choices=DTYPES, default="auto",
                        help="dtype of the written weights (auto: the source config's)")
    add_parallel_args(parser)
    args = parser.parse_args(argv)
    preflight(args)
    device = start(args)
    from acerag_megatron.weights.convert import megatron_to_hf

    megatron_to_hf(args.megatron_path, args.output, hf_config_from=args.hf_config_from, tp=args.tp, pp=args.pp,
                   device=device, dtype=args.dtype)
    finish()


def main(argv=None) -> None:
    """Console script and `-m` entry: argv (default sys.argv[1:]); a user mistake ends as one `error:` line
    from rank 0."""
    run(convert, argv)


if __name__ == "__main__":
    main()
