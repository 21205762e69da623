"""`python tools/benchmark.py ...` is the installed command `acerag-benchmark ...`
(flags and examples: acerag_megatron/cli/benchmark.py)."""
import sys

from acerag_megatron.cli.benchmark import main

if __name__ == "__main__":
    sys.exit(main())
