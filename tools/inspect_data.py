"""`python tools/inspect_data.py ...` is the installed command `acerag-inspect-data ...`
(flags and examples: acerag_megatron/cli/inspect_data.py)."""
import sys

from acerag_megatron.cli.inspect_data import main

if __name__ == "__main__":
    sys.exit(main())
