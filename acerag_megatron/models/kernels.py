"""Elementwise chains compiled into single kernels with torch.compile (Triton on a GPU).

Eager PyTorch runs each elementwise op as its own kernel that reads and writes the whole tensor:
SwiGLU's backward is a dozen such passes over [tokens, 2 x ffn], Megatron's unfused RoPE
about five over q and k, and an unfused RMSNorm several in float32, in every layer of both
models. These chains are memory-bound, so fusing each into one pass removes most of their time.
Only the leading (token) dimension of each tensor argument is compiled as dynamic: packed rows
change length from one micro-batch to the next and must not trigger recompiles, while the
hidden, head and FFN sizes stay constants. With every dimension symbolic (`dynamic=True`) the
kernels index through divisions by runtime sizes and ran 4-8x below memory bandwidth on an
H200 (SwiGLU backward 1.35 ms where 0.3 ms moves its bytes); any other dimension that does
change (the micro-batch size) becomes dynamic after one recompile, torch's automatic default.
"""
from __future__ import annotations

import warnings

import torch

_compiled: dict = {}


class _CompiledOrEager:
    """Calls the compiled function; if compiling fails (no working compiler toolchain on the
    machine, an unsupported torch build), warns once and runs the same function eagerly: the
    results are the same, only slower."""

    def __init__(self, fn):
        self.fn = fn
        self.compiled = torch.compile(fn)
        self.failed = False

    def __call__(self, *args):
        if not self.failed:
            try:
                for a in args:
                    if isinstance(a, torch.Tensor) and a.dim() > 0:
                        torch._dynamo.maybe_mark_dynamic(a, 0)
                return self.compiled(*args)
            except Exception as e:  # compile errors come in many types (dynamo, inductor, triton)
                self.failed = True
                warnings.warn(f"torch.compile of {self.fn.__name__} failed ({type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else ''}); running it eagerly")
        return self.fn(*args)


def compiled(fn):
    """`fn` compiled once per process (dynamic token dimension); the same object on every call."""
    if fn not in _compiled:
        _compiled[fn] = _CompiledOrEager(fn)
    return _compiled[fn]
