"""`python tools/preprocess_data.py ...` is the installed command `acerag-preprocess-data ...`
(flags and examples: acerag_megatron/cli/preprocess_data.py)."""
import sys

from acerag_megatron.cli.preprocess_data import main

if __name__ == "__main__":
    sys.exit(main())
