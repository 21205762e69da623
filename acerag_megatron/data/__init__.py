"""Data path: raw records -> tokenized indexed binaries -> deterministic training samples."""
