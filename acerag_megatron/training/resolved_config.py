"""The run options whose defaults depend on the device and the parallel layout, decided in one
place before the trainer builds anything.

--bf16 and --fused_optimizer default to on for a GPU and off on CPU (fp32 and torch's foreach
AdamW there); --overlap_grad_reduce defaults to on with more than one data-parallel rank (there
is nothing to overlap with one). A value given on the command line always wins.
"""
from __future__ import annotations

import dataclasses

from acerag_megatron.device import DeviceInfo

RESOLVED_FIELDS = ("bf16", "fused_optimizer", "overlap_grad_reduce")


@dataclasses.dataclass(frozen=True)
class ResolvedConfig:
    """The decided values and what they were decided from."""

    bf16: bool
    fused_optimizer: bool
    overlap_grad_reduce: bool
    device: str
    """'cuda' or 'cpu', from the DeviceInfo."""
    data_parallel_size: int
    """world size / (TP x PP)."""
    defaulted: tuple[str, ...]
    """The fields left unset on the command line, so decided here."""

    def values(self) -> dict[str, bool]:
        """The decided fields by TrainArguments name."""
        return {name: getattr(self, name) for name in RESOLVED_FIELDS}

    def record(self) -> dict:
        """What the run's config.json records under 'resolved'."""
        return {**self.values(), "device": self.device, "data_parallel_size": self.data_parallel_size,
                "defaulted": list(self.defaulted)}

    def describe(self) -> str:
        """One line for the start-up summary: each value, and why where it is a default."""
        why = {"bf16": f"{self.device} default", "fused_optimizer": f"{self.device} default",
               "overlap_grad_reduce": f"DP {self.data_parallel_size} default"}
        return ", ".join(f"{name}={value} ({why[name] if name in self.defaulted else 'given'})"
                         for name, value in self.values().items())


def resolve_config(args, device: DeviceInfo, data_parallel_size: int) -> ResolvedConfig:
    """Decide bf16, fused_optimizer and overlap_grad_reduce for a run; pure, args is not changed.

    Args:
        args: TrainArguments (or anything with the three fields); None means "default".
        device: the result of resolve_device().
        data_parallel_size: world size / (TP x PP) (parallel.data_parallel_size()).
    """
    gpu = device.device == "cuda"
    defaults = {"bf16": gpu, "fused_optimizer": gpu, "overlap_grad_reduce": data_parallel_size > 1}
    given = {name: getattr(args, name) for name in RESOLVED_FIELDS}
    return ResolvedConfig(**{name: defaults[name] if value is None else bool(value) for name, value in given.items()},
                          device=device.device, data_parallel_size=data_parallel_size,
                          defaulted=tuple(name for name, value in given.items() if value is None))
