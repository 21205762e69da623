"""Tiny random HF models, tokenizers and seed-shaped corpora, made on the fly for tests and
the CPU quickstart (nothing is downloaded)."""
