"""Writer of Megatron indexed dataset files (`.bin` tokens, `.idx` index in the MMIDIDX version 1
layout), byte for byte what megatron.core's IndexedDatasetBuilder writes (tests/test_data_encoding.py
compares the two). Preprocessing writes through it so that it never imports megatron.core, whose
package import (torch included) costs seconds of every run's start-up; reading stays with megatron.
"""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

_HEADER = b"MMIDIDX\x00\x00"
_VERSION = 1
# megatron.core.datasets.indexed_dataset.DType codes.
_DTYPE_CODES = {np.uint8: 1, np.int8: 2, np.int16: 3, np.int32: 4, np.int64: 5, np.float64: 6, np.float32: 7,
                np.uint16: 8}


def optimal_dtype(vocab_size: int) -> type:
    """The token dtype for a vocabulary size, as megatron's DType.optimal_dtype chooses it."""
    return np.uint16 if vocab_size < 65500 else np.int32


class IndexedWriter:
    """Appends documents to `<prefix>.bin` as they come; `finalize` writes the `.idx`."""

    def __init__(self, bin_path: str | Path, dtype: type):
        self.dtype = dtype
        self._bin = open(bin_path, "wb")
        self._lengths: list[np.ndarray] = []
        self._document_ends: list[np.ndarray] = [np.zeros(1, dtype=np.int64)]
        self._sequences = 0

    def add_documents(self, tokens: np.ndarray, lengths: np.ndarray, per_document: int) -> None:
        """Append len(lengths) / per_document documents: `tokens` holds their sequences back to back,
        `lengths` one length per sequence."""
        self._bin.write(np.ascontiguousarray(tokens, dtype=self.dtype).tobytes())
        lengths = np.asarray(lengths, dtype=np.int32)
        self._lengths.append(lengths)
        documents = len(lengths) // per_document
        self._document_ends.append(self._sequences + per_document * np.arange(1, documents + 1, dtype=np.int64))
        self._sequences += len(lengths)

    def finalize(self, idx_path: str | Path) -> None:
        """Close the `.bin` and write the index: sequence lengths, byte offsets, document bounds."""
        self._bin.close()
        lengths = np.concatenate(self._lengths) if self._lengths else np.zeros(0, dtype=np.int32)
        pointers = np.zeros(len(lengths), dtype=np.int64)
        np.cumsum(lengths[:-1].astype(np.int64) * np.dtype(self.dtype).itemsize, out=pointers[1:])
        document_ends = np.concatenate(self._document_ends)
        with open(idx_path, "wb") as f:
            f.write(_HEADER)
            f.write(struct.pack("<Q", _VERSION))
            f.write(struct.pack("<B", _DTYPE_CODES[self.dtype]))
            f.write(struct.pack("<Q", len(lengths)))
            f.write(struct.pack("<Q", len(document_ends)))
            f.write(lengths.tobytes(order="C"))
            f.write(pointers.tobytes(order="C"))
            f.write(document_ends.tobytes(order="C"))

    def close(self) -> None:
        """Close the `.bin` (finalize does it too)."""
        self._bin.close()
