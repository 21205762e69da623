"""Command-line converters between Hugging Face folders and Megatron torch_dist checkpoints."""
