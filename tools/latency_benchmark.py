"""`python tools/latency_benchmark.py ...` is the installed command `acerag-latency-benchmark ...`
(flags and examples: acerag_megatron/cli/latency_benchmark.py)."""
import sys

from acerag_megatron.cli.latency_benchmark import main

if __name__ == "__main__":
    sys.exit(main())
