"""Encoder-state selection inside one fine-tuning / inference encoder chunk (METHOD.md 2.3)."""
from __future__ import annotations

import numpy as np

METHODS = ("stride", "random", "terminal")


def stride_indices(n: int, r: int, num_instruction_tokens: int) -> list[int]:
    """Base grid of AceRAG: every r-th position after the instruction, plus the last token.

    The remainder test uses the full chunk length `n` (BOS and instruction included), so with an
    instruction length not divisible by r the last index can repeat or the last token can be left
    out. Both are kept on purpose (METHOD.md A6).
    """
    if r < 1:
        raise ValueError(f"compression ratio must be >= 1, got {r}")
    base = list(range(r - 1 + num_instruction_tokens, n, r))
    if n % r != 0:
        base.append(n - 1)
    if r == 1:
        base = base[1:]
    return base


def chunk_indices(n: int, r: int, num_instruction_tokens: int, method: str,
                  rng: np.random.Generator | None) -> list[int]:
    """Positions of the encoder states kept for one chunk of length `n` at ratio `r`.

    Args:
        n: chunk length (`[BOS] + instruction + context piece`).
        r: compression ratio.
        num_instruction_tokens: T, the task-instruction length (BOS not counted).
        method: 'stride' (grid), 'random' (as many distinct positions drawn from [T, n), sorted)
            or 'terminal' (the last positions of [T, n)).
        rng: generator for 'random'; unused otherwise.

    Returns:
        Positions in the order their states enter the LM.
    """
    base = stride_indices(n, r, num_instruction_tokens)
    if method == "stride":
        return base
    lo = num_instruction_tokens
    k = min(len(base), max(n - lo, 0))
    if method == "random":
        if rng is None:
            raise ValueError("method 'random' needs a numpy Generator")
        picked = rng.choice(np.arange(lo, n), size=k, replace=False)
        return sorted(int(i) for i in picked)
    if method == "terminal":
        return list(range(n - k, n))
    raise ValueError(f"unknown down-scaling method {method!r}; expected one of {METHODS}")
