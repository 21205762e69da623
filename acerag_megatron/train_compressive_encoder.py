"""Entry point: `torchrun ... -m acerag_megatron.train_compressive_encoder <seed flags>`.

Accepts every flag of AceRAG's training document with its meaning there, plus Megatron's
parallelism flags (`--tensor_model_parallel_size`, `--pipeline_model_parallel_size`,
`--sequence_parallel`, ...). `--help` lists them all.
"""
from __future__ import annotations

import sys


def main(argv=None):
    import warnings

    # torch.distributed deprecation notices raised inside megatron-core, not actionable here.
    warnings.filterwarnings("ignore", category=FutureWarning)
    from acerag_megatron.training.arguments import parse_args
    from acerag_megatron.training.validate import validate_run

    args = parse_args(argv)
    validate_run(args)
    from acerag_megatron.preflight import is_rank0
    from acerag_megatron.training.run_lock import lock_output_dir

    # Taken before the heavy imports and before anything reads or cleans the folder, so a second
    # run on it is refused at once; the kernel frees the lock however this process exits.
    lock = lock_output_dir(args.output_dir) if is_rank0() else None
    try:
        from acerag_megatron.training.trainer import run  # heavy imports after argument errors

        run(args)
    finally:
        if lock is not None:
            lock.release()


if __name__ == "__main__":
    from acerag_megatron.preflight import one_error_line

    one_error_line(main, sys.argv[1:])
