"""The hardware seam: decides CUDA vs CPU, NCCL vs gloo, Transformer Engine vs local spec, the
attention backend and compiled kernels. Deciding changes nothing: resolve_device() only probes
what is importable and whether a GPU is present. What a decision asks of the process (the CPU
compatibility patches, the compiled RoPE route) is applied by process_setup.prepare_process().

Attention is decided per kind of row. Plain causal rows (no mask) may run on any backend,
Transformer Engine's fused attention included. Masked rows (packed windows' block masks,
packed finetune rows' document masks, padding) run only on a backend that reads the mask:
TE's DotProductAttention honours its `attn_mask_type` alone and ignores a dense mask passed
with `causal`, which would let window W_i attend to its own compressed states C_i.
"""
from __future__ import annotations

import dataclasses

import torch

ATTENTION_BACKENDS = ("auto", "te", "sdpa", "flash", "flex", "unfused")
# Backends that read every mask a packed row can carry (specs and dense bool masks).
MASK_BACKENDS = ("flex", "sdpa", "unfused")
COMPILED_KERNELS = ("auto", "on", "off")


@dataclasses.dataclass(frozen=True)
class DeviceInfo:
    """Resolved execution environment for one process."""

    device: str
    """'cuda' or 'cpu'."""
    dist_backend: str
    """'nccl' or 'gloo'."""
    use_te: bool
    """Transformer Engine is importable and a GPU is present: use the TE layer spec."""
    attention_backend: str
    """Resolved choice: 'te', 'sdpa', 'flash' (SDPA pinned to flash kernels), 'flex'
    (FlexAttention block masks) or 'unfused' (Megatron's DotProductAttention, a reference)."""
    megatron_core: str
    """Installed megatron-core version."""
    compiled_kernels: bool = False
    """SwiGLU, RoPE and RMSNorm run as torch.compile'd fused kernels (local spec; TE fuses its own)."""

    @property
    def causal_attention(self) -> str:
        """Core attention of rows without a mask: the resolved choice itself."""
        return self.attention_backend

    @property
    def masked_attention(self) -> str:
        """Core attention of masked rows: the choice where it reads masks, else FlexAttention on a
        GPU ('te' ignores dense masks, 'flash' kernels take none), SDPA on CPU."""
        if self.attention_backend in MASK_BACKENDS:
            return self.attention_backend
        return "flex" if self.device == "cuda" else "sdpa"

    def describe(self) -> str:
        """One line for the start-up summary."""
        return (f"device={self.device} dist={self.dist_backend} te-layers={'yes' if self.use_te else 'no'} "
                f"attention: causal rows={self.causal_attention}, packed-window rows={self.masked_attention}, "
                f"document-masked rows={self.masked_attention}; "
                f"compiled-kernels={'on' if self.compiled_kernels else 'off'} "
                f"megatron-core={self.megatron_core} torch={torch.__version__}")


def _te_importable() -> bool:
    try:
        import transformer_engine.pytorch  # noqa: F401
    except Exception:  # an empty TE meta package raises RuntimeError, not ImportError
        return False
    return True


def _flex_available() -> bool:
    try:
        from torch.nn.attention.flex_attention import flex_attention  # noqa: F401
    except ImportError:
        return False
    return True


def _triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def choose_attention(requested: str, cuda: bool, te_importable: bool, flex_available: bool) -> tuple[bool, str]:
    """(TE layers, attention choice) for a request on a machine; pure, so every combination is testable.

    TE layers need a GPU and an importable TE, and are used for 'auto' and 'te' only: a named
    non-TE choice selects the local spec, so the choice is honoured throughout.

    Raises:
        ValueError: for an unknown backend or one that this machine cannot run.
    """
    if requested not in ATTENTION_BACKENDS:
        raise ValueError(f"attention_backend: unknown value {requested!r}, expected one of {ATTENTION_BACKENDS}")
    use_te = cuda and te_importable
    if requested == "auto":
        # Without TE on a GPU: FlexAttention for block masks (packed windows, document masks),
        # SDPA's flash kernel for plain causal rows (FlexAttention routes those to it).
        return use_te, "te" if use_te else ("flex" if cuda and flex_available else "sdpa")
    if requested == "te" and not use_te:
        raise ValueError("attention_backend: 'te' needs a GPU and an importable transformer_engine")
    if requested in ("flash", "flex") and not cuda:
        # torch has no FlexAttention backward on CPU; its forward is tested there on its own.
        raise ValueError(f"attention_backend: {requested!r} needs a GPU")
    return use_te and requested == "te", requested


def resolve_device(attention_backend: str = "auto", compiled_kernels: str = "off") -> DeviceInfo:
    """Resolve the device, distributed backend, layer-spec flavour and attention backend.

    Args:
        attention_backend: 'auto' (TE where usable, else FlexAttention on a GPU, SDPA on CPU), 'te', 'sdpa',
            'flash', 'flex' or 'unfused'.
        compiled_kernels: 'auto' (on for a GPU with Triton and the local spec), 'on' or 'off'.

    Returns:
        The resolved DeviceInfo; nothing is patched (see process_setup.prepare_process()).

    Raises:
        ValueError: for an unknown backend or one that this machine cannot run.
    """
    cuda = torch.cuda.is_available()
    use_te, resolved = choose_attention(attention_backend, cuda, cuda and _te_importable(),
                                        cuda and _flex_available())
    if compiled_kernels not in COMPILED_KERNELS:
        raise ValueError(f"compiled_kernels: unknown value {compiled_kernels!r}, expected one of {COMPILED_KERNELS}")
    # torch.compile also works on CPU (C++ codegen, what the tests check) but gains little there.
    compile_on = compiled_kernels == "on" or (compiled_kernels == "auto" and cuda and _triton_available())
    compile_on = compile_on and not use_te
    from megatron.core import package_info

    return DeviceInfo(device="cuda" if cuda else "cpu", dist_backend="nccl" if cuda else "gloo",
                      use_te=use_te, attention_backend=resolved, megatron_core=package_info.__version__,
                      compiled_kernels=compile_on)
