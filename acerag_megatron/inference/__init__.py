"""Serving and evaluation of trained compressive encoders with transformers (AceRAG inference path)."""
