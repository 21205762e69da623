"""Megatron-core models: the trainable compressive encoder and the frozen language model."""
