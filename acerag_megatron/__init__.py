"""acerag_megatron: a Megatron-core trainer for AceRAG compressive encoders."""
import warnings as _warnings

# megatron-core warns once per module about every optional fused kernel it cannot find, and
# torch warns when the CPU compatibility layer inspects non-leaf tensors; the device seam
# prints the resolved choices once instead.
for _pattern in ("Transformer Engine and Apex are not installed", "Apex is not installed",
                 "The .grad attribute of a Tensor that is not a leaf", "full scope is deprecated"):
    _warnings.filterwarnings("ignore", message=_pattern)

__version__ = "0.1.0"

CONTEXT_TAG = "[CONTEXT_RmehNsY1]"
"""Sentinel in prompt templates marking where the retrieved context goes."""

PLACEHOLDER_TOKEN_ID = 100
"""LM input id at positions later overwritten by encoder states (finetune and inference)."""

PRETRAIN_PLACEHOLDER_TOKEN_ID = 1
"""LM input id used for compressed-memory positions in window-mode pretraining."""

IGNORE_INDEX = -100
"""Label of positions without a target (HF's and torch's cross-entropy convention)."""
