"""`python tools/evaluate.py ...` is the installed command `acerag-evaluate ...`
(flags and examples: acerag_megatron/cli/evaluate.py)."""
import sys

from acerag_megatron.cli.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
