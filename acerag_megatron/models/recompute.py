"""Activation-recompute specs: the flag value -> Megatron TransformerConfig fields.

Kept free of Megatron imports so argument parsing can validate a spec cheaply.
"""
from __future__ import annotations

RECOMPUTE_CHOICES = ("none", "selective", "full")
# Megatron's selective-recompute modules that apply to a dense model. 'layernorm' is left out:
# megatron-core 0.16.1's CheckpointWithoutOutput takes its fp8 branch unless Transformer Engine
# is importable, and the frozen LM saves no norm outputs anyway (its linears need no inputs).
MEGATRON_MODULES = ("core_attn", "mlp")
# Ours: recompute fc1 and the SwiGLU only (models/swiglu.py). For the frozen LM it saves what
# 'mlp' saves (the MLP input instead of the fc1 output) without re-running fc2, a third of
# the MLP's forward, since a frozen fc2 needs no input for its backward.
OWN_MODULES = ("fc1",)
RECOMPUTE_MODULES = MEGATRON_MODULES + OWN_MODULES


def recompute_modules(recompute: str) -> list[str]:
    """The modules a selective spec names: 'selective' is core_attn; 'none' and 'full' name none.

    Raises:
        ValueError: on an unknown mode or module.
    """
    if recompute in ("none", "full"):
        return []
    modules = ["core_attn"] if recompute == "selective" else [m.strip() for m in recompute.split(",") if m.strip()]
    unknown = [m for m in modules if m not in RECOMPUTE_MODULES]
    if unknown or not modules:
        raise ValueError(f"recompute: unknown value {recompute!r}, expected one of {RECOMPUTE_CHOICES} "
                         f"or a comma list of {RECOMPUTE_MODULES}")
    return modules


def recompute_kwargs(recompute: str) -> dict:
    """Megatron TransformerConfig fields for a recompute spec (our own modules are not among them).

    'none'; 'full' (every layer, uniform); 'selective' (= core_attn); or a comma list of
    RECOMPUTE_MODULES, e.g. 'fc1' for the frozen LM (it then keeps the MLP input instead of its
    fc1 output: 2 x ffn - hidden fewer values per token and layer, for one more fc1 forward).

    Raises:
        ValueError: on an unknown mode or module.
    """
    if recompute == "full":
        return dict(recompute_granularity="full", recompute_method="uniform", recompute_num_layers=1)
    megatron = [m for m in recompute_modules(recompute) if m in MEGATRON_MODULES]
    return dict(recompute_granularity="selective", recompute_modules=megatron) if megatron else {}


def check_layer_support(flag: str, recompute: str, te_layers: bool) -> None:
    """Refuse a spec the layers would silently ignore: fc1 recompute lives in our SwiGLU MLP,
    which Transformer Engine's layer spec replaces with its own fused MLP.

    Raises:
        ValueError: naming the flag, when `te_layers` and the spec names fc1.
    """
    if te_layers and "fc1" in recompute_modules(recompute):
        raise ValueError(f"--{flag} {recompute}: fc1 recompute needs the local layer spec (Transformer Engine's "
                         "MLP has no such mode); use 'mlp' or 'full', or pick local layers with "
                         "--attention_backend flex")
