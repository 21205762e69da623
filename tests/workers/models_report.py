"""Parsing of the `CHECK name value` lines the model workers print (no heavy imports)."""
from __future__ import annotations

import re


def parse_checks(output: str) -> dict[str, float]:
    """name -> value for every CHECK line; a repeated name keeps the largest value."""
    checks: dict[str, float] = {}
    for m in re.finditer(r"^CHECK (\S+) (\S+)$", output, re.M):
        checks[m.group(1)] = max(float(m.group(2)), checks.get(m.group(1), float("-inf")))
    return checks
