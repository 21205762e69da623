"""acerag_megatron: a Megatron-core trainer for AceRAG compressive encoders."""

__version__ = "0.1.0"

CONTEXT_TAG = "[CONTEXT_RmehNsY1]"
"""Sentinel in prompt templates marking where the retrieved context goes."""

PLACEHOLDER_TOKEN_ID = 100
"""LM input id at positions later overwritten by encoder states (finetune and inference)."""

PRETRAIN_PLACEHOLDER_TOKEN_ID = 1
"""LM input id used for compressed-memory positions in window-mode pretraining."""
