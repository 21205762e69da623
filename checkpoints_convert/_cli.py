"""Start-up shared by the converter commands: one-line errors, checks before any process group,
device, process group, parallel layout."""
from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def make_parser(doc: str) -> argparse.ArgumentParser:
    from acerag_megatron.preflight import OneLineErrorParser

    return OneLineErrorParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)


def add_parallel_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tp", type=int, default=1, help="tensor-parallel size (world size = tp * pp)")
    parser.add_argument("--pp", type=int, default=1, help="pipeline-parallel size")


def add_output_args(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--output", required=True,
                        help=f"destination {what} folder; an earlier output of this command is replaced, another "
                             "non-empty folder only with --overwrite, an input never")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --output of other origin")


def check_parallel(arch, source: str, args, num_layers: int | None) -> None:
    """World size, TP and PP against the model, before any process group exists."""
    from acerag_megatron.preflight import check_parallel_sizes, check_world_size

    check_parallel_sizes(arch, source, tp=args.tp, pp=args.pp, num_layers=num_layers, tp_flag="--tp", pp_flag="--pp")
    check_world_size(args.tp, args.pp, "--tp", "--pp", exact=True)


def run(main, argv=None) -> None:
    """Run a converter's main: a user error prints one line from rank 0 and exits non-zero."""
    from acerag_megatron.preflight import one_error_line

    one_error_line(main, sys.argv[1:] if argv is None else argv)


def start(args):
    """Resolve the device and initialise parallel state; returns the DeviceInfo."""
    from acerag_megatron.device import resolve_device
    from acerag_megatron.parallel import initialize_parallel
    from acerag_megatron.process_setup import prepare_process

    import transformers

    transformers.logging.set_verbosity_error()
    device = resolve_device()
    prepare_process(device)
    initialize_parallel(args.tp, args.pp, seed=0, device=device)
    return device


def finish() -> None:
    from acerag_megatron.parallel import destroy_parallel

    destroy_parallel(process_group=True)
