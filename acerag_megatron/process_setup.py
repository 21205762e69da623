"""The process-wide changes a resolved device asks for, applied in one explicit step.

resolve_device() only decides; this step acts on its decision. Both changes replace functions
for the whole process and cannot be undone, so every entry point (trainer, converters, test
workers) calls prepare_process() once, right after resolve_device() and before it initialises
parallel state or builds a model:

- CPU compatibility patches (cpu_compat.py) when the device is 'cpu': Megatron hard-codes CUDA.
- Megatron's unfused RoPE routed to the compiled kernel (models/rope.py) with compiled kernels.
"""
from __future__ import annotations

from acerag_megatron.device import DeviceInfo

CPU_COMPAT = "cpu-compat"
COMPILED_ROPE = "compiled-rope"
_DESCRIPTIONS = {
    CPU_COMPAT: "CPU compatibility patches (megatron-core {version})",
    COMPILED_ROPE: "Megatron's RoPE routed to the compiled kernel",
}


def prepare_process(device: DeviceInfo) -> list[str]:
    """Apply what `device` asks of this process; idempotent, so a second call changes nothing.

    Args:
        device: the result of resolve_device().

    Returns:
        The names of the changes this process now carries for `device` (CPU_COMPAT,
        COMPILED_ROPE), in the order applied; empty when it needs none.

    Raises:
        RuntimeError: on CPU, when the installed megatron-core is not the version the patches target.
    """
    applied = []
    if device.device == "cpu":
        from acerag_megatron.cpu_compat import apply_cpu_compat

        apply_cpu_compat()
        applied.append(CPU_COMPAT)
    if device.compiled_kernels:
        from acerag_megatron.models.rope import use_compiled_rope

        use_compiled_rope()
        applied.append(COMPILED_ROPE)
    return applied


def describe_process_setup(applied: list[str], device: DeviceInfo) -> str:
    """One line for the start-up summary naming what prepare_process() applied."""
    if not applied:
        return "nothing process-wide (no CPU patches, Megatron's own RoPE)"
    return "; ".join(_DESCRIPTIONS[name].format(version=device.megatron_core) for name in applied)
