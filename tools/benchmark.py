"""Benchmark full training steps (optimizer included) at real shapes with random weights.

  python tools/benchmark.py --model tiny --mode pretrain                       # CPU
  torchrun --nproc-per-node 1 tools/benchmark.py --model llama2-7b --mode pretrain   # GPU

Trainer flags may follow `--` (e.g. `-- --attention_backend flex --recompute selective`).
Prints one JSON object (and writes it to --output if given).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=["llama2-7b", "qwen3-8b", "tiny"], default="tiny")
    p.add_argument("--mode", choices=["pretrain", "finetune"], default="pretrain")
    p.add_argument("--seq-len", type=int, default=None, help="pretrain document length (default 8192 / 7000)")
    p.add_argument("--steps", type=int, default=5, help="timed steps")
    p.add_argument("--warmup", type=int, default=2, help="untimed warm-up steps")
    p.add_argument("--profile-steps", type=int, default=0,
                   help="after the timed steps, profile this many more and add where the time goes to the JSON")
    p.add_argument("--output", default=None, help="also write the JSON here")
    a = p.parse_args(argv)
    if "RANK" not in os.environ:  # single process without torchrun
        os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1")
        os.environ.setdefault("MASTER_PORT", "29561")
    import warnings

    warnings.filterwarnings("ignore")
    from acerag_megatron.training.benchmark import run_benchmark, to_json

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
        if a.output:
            tmp = Path(a.output + ".tmp")
            tmp.write_text(text + "\n")
            tmp.replace(a.output)


if __name__ == "__main__":
    main()
