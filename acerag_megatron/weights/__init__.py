"""Weights: HF folder reading, the HF<->Megatron layout table, loading, export and dist checkpoints."""
