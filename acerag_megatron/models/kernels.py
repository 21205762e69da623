"""Elementwise chains compiled into single kernels with torch.compile (Triton on a GPU).

Eager PyTorch runs each elementwise op as its own kernel that reads and writes the whole tensor:
SwiGLU's backward is a dozen such passes over [tokens, 2 x ffn], Megatron's unfused RoPE
about five over q and k, and an unfused RMSNorm several in float32, in every layer of both
models. These chains are memory-bound, so
fusing each into one pass removes most of their time. Shapes are compiled as dynamic: packed
rows change length from one micro-batch to the next and must not trigger recompiles.
"""
from __future__ import annotations

import torch

_compiled: dict = {}


def compiled(fn):
    """`fn` compiled once per process (dynamic shapes); the same object on every call."""
    if fn not in _compiled:
        _compiled[fn] = torch.compile(fn, dynamic=True)
    return _compiled[fn]
