"""Benchmark full training steps (optimizer included) at real shapes with random weights.

  python tools/benchmark.py --model tiny --mode pretrain                       # CPU
  torchrun --nproc-per-node 1 tools/benchmark.py --model llama2-7b --mode pretrain   # GPU

Trainer flags may follow `--` (e.g. `-- --attention_backend flex --recompute selective`).
Prints one JSON object (and writes it to --output if given).

The real workload (variable lengths, one sample per GPU per step): give a length distribution
and it times a few representative lengths, then projects DP=N with and without --group_by_length:

  python tools/benchmark.py --model llama2-7b --length-dist redpajama -- --gradient_checkpointing
  python tools/benchmark.py --model qwen3-8b --mode finetune --lengths-from data/longalpaca_qwen3
  python tools/benchmark.py --model tiny --length-dist lognormal:600:0.5 --min_length 300 --max_length 2000
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from acerag_megatron.cli.spellings import ToolParser


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    p = ToolParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=["llama2-7b", "qwen3-8b", "tiny"], default="tiny")
    p.add_argument("--mode", choices=["pretrain", "finetune"], default="pretrain")
    p.add_argument("--seq-len", type=int, default=None, help="pretrain document length (default 8192 / 7000)")
    p.add_argument("--steps", type=int, default=5, help="timed steps (workload: per length)")
    p.add_argument("--warmup", type=int, default=2,
                   help="untimed warm-up steps (workload: before the first length; each length adds one)")
    p.add_argument("--profile-steps", type=int, default=0,
                   help="after the timed steps, profile this many more and add where the time goes to the JSON")
    p.add_argument("--output", default=None, help="also write the JSON here")
    w = p.add_argument_group("workload (variable lengths)")
    w.add_argument("--lengths-from", default=None, metavar="PREFIX",
                   help="sample lengths of a preprocessed prefix (its .idx, after the length filter)")
    w.add_argument("--length-dist", default=None, metavar="SPEC",
                   help="lognormal:MEDIAN:SIGMA, or redpajama (lognormal:2200:0.8, a model of the seed's "
                        "pretraining lengths) or longalpaca (lognormal:12000:0.5, an assumed LongAlpaca-like shape)")
    w.add_argument("--min_length", type=int, default=None,
                   help="keep min_length < length (default: the launch scripts', 1024)")
    w.add_argument("--max_length", type=int, default=None,
                   help="keep length < max_length (default: the launch scripts', 16000 / 7000 Qwen3 / 32000 finetune)")
    w.add_argument("--strata", type=int, default=6,
                   help="equal-count length strata timed (their middle lengths) besides the shortest and longest")
    w.add_argument("--dp", type=int, nargs="+", default=[8], help="data-parallel sizes to project")
    w.add_argument("--samples", type=int, default=16000, help="lengths drawn from --length-dist")
    w.add_argument("--seed", type=int, default=42, help="seed of the draw and of the simulated sampler")
    a = p.parse_args(argv)
    workload = a.lengths_from is not None or a.length_dist is not None
    if workload:
        if "--group_by_length" in extra:
            raise SystemExit("error: --group_by_length: the workload benchmark projects both orders itself; "
                             "leave it out of the trainer flags")
        lengths, source, stage_extra = _workload_lengths(a, extra)
    if "RANK" not in os.environ:  # single process without torchrun
        os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1")
        os.environ.setdefault("MASTER_PORT", "29561")
    import warnings

    warnings.filterwarnings("ignore")
    from acerag_megatron.training.benchmark import run_benchmark, to_json

    if workload:
        from acerag_megatron.training.benchmark import run_workload

        result = run_workload(a.model, a.mode, lengths, source, a.min_length, a.max_length, a.steps, a.warmup, extra,
                              strata=a.strata, dp_sizes=a.dp, seed=a.seed, stage_extra=stage_extra)
    else:
        result = run_benchmark(a.model, a.mode, a.seq_len, a.steps, a.warmup, extra, profile_steps=a.profile_steps)
    text = to_json(result)
    if int(os.environ.get("RANK", "0")) == 0:
        print(text, flush=True)
        if "profile" in result:  # the same breakdown, readable, on stderr
            prof = result["profile"]
            kind = "device" if prof["device_time"] else "CPU"
            print(f"where the {kind} time goes ({prof['total_ms_per_step']:.1f} ms per step):", file=sys.stderr)
            for name, row in prof["by_category"].items():
                print(f"  {name:18s} {row['share']:6.1%}  {row['ms_per_step']:9.2f} ms", file=sys.stderr)
        if "projection" in result:
            from acerag_megatron.training.workload import table

            print(table(result), file=sys.stderr)
        elif "warning" in result:
            print(f"warning: {result['warning']}", file=sys.stderr)
        if a.output:
            from acerag_megatron.weights.atomic import write_file

            write_file(Path(a.output), text + "\n")


def _workload_lengths(a, extra):
    """(lengths, source, extra stages) of --lengths-from / --length-dist; user mistakes end in one line."""
    from acerag_megatron.training import workload

    if a.lengths_from is not None and a.length_dist is not None:
        raise SystemExit("error: --length-dist: give either --lengths-from or --length-dist, not both")
    if a.profile_steps or a.seq_len:
        raise SystemExit("error: --profile-steps/--seq-len: fixed-shape options; the workload times its own lengths")
    if a.min_length is None:
        a.min_length = 1024
    if a.max_length is None:
        a.max_length = 32000 if a.mode == "finetune" else 7000 if a.model == "qwen3-8b" else 16000
    for flag, value in (("--strata", a.strata), ("--samples", a.samples), *(("--dp", d) for d in a.dp)):
        if value < 1:
            raise SystemExit(f"error: {flag}: {value} must be >= 1")
    if a.lengths_from is not None:
        from acerag_megatron.data.preprocess import DataError

        # The trainer flag wins, as it does in the run (the single-segment filter depends on it).
        window = int(extra[extra.index("--window") + 1]) if "--window" in extra[:-1] else \
            256 if a.model == "tiny" else 1024
        try:
            lengths = workload.lengths_from_prefix(a.lengths_from, a.mode == "pretrain", a.min_length, a.max_length,
                                                   window)
        except (DataError, OSError, ValueError) as e:
            raise SystemExit(f"error: --lengths-from: {e}")
        if len(lengths) < 2:
            raise SystemExit(f"error: --lengths-from: {a.lengths_from}: {len(lengths)} sample(s) with "
                             f"{a.min_length} < length < {a.max_length}; the workload needs at least 2")
        return lengths, f"prefix {a.lengths_from}", [("this data", int(len(lengths)))]
    try:
        lengths = workload.draw_lengths(a.length_dist, a.samples, a.min_length, a.max_length, a.seed)
    except ValueError as e:
        raise SystemExit(f"error: --length-dist: {e}")
    return lengths, a.length_dist, []


if __name__ == "__main__":
    main()
