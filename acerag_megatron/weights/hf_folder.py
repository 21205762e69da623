"""Read a Hugging Face model folder (or cached hub id) lazily, tensor slice by tensor slice.

Supports safetensors and PyTorch .bin weights, single-file or sharded with an index json.
Each rank reads only the rows/columns it owns (safetensors get_slice).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

_INDEX_FILES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
_SINGLE_FILES = ("model.safetensors", "pytorch_model.bin")


def resolve_hf_path(name_or_path: str) -> Path:
    """A local folder as is; otherwise a hub id resolved through the local HF cache / hub."""
    path = Path(name_or_path)
    if path.is_dir():
        return path
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(str(name_or_path), allow_patterns=["*.json", "*.safetensors", "*.bin"]))


class HFCheckpoint:
    """Lazy view of the weight tensors of one HF folder.

    Args:
        name_or_path: folder or hub id.

    Raises:
        FileNotFoundError: when the folder holds no recognised weight file.
    """

    def __init__(self, name_or_path: str):
        self.path = resolve_hf_path(name_or_path)
        self._file_of: dict[str, Path] = {}
        self._open: dict[Path, object] = {}
        for index_name in _INDEX_FILES:
            index = self.path / index_name
            if index.exists():
                weight_map = json.loads(index.read_text())["weight_map"]
                self._file_of = {k: self.path / v for k, v in weight_map.items()}
                break
        else:
            for single in _SINGLE_FILES:
                if (self.path / single).exists():
                    self._file_of = {k: self.path / single for k in self._keys_in(self.path / single)}
                    break
        if not self._file_of:
            raise FileNotFoundError(f"{self.path}: no model.safetensors / pytorch_model.bin (or index json) found")

    @property
    def config(self) -> dict:
        """The folder's config.json as a dict."""
        return json.loads((self.path / "config.json").read_text())

    def keys(self) -> list[str]:
        """All tensor names in the checkpoint."""
        return list(self._file_of)

    def __contains__(self, name: str) -> bool:
        return name in self._file_of

    def _keys_in(self, file: Path) -> list[str]:
        if file.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(file), framework="pt") as f:
                return list(f.keys())
        return list(self._bin(file).keys())

    def _bin(self, file: Path) -> dict:
        if file not in self._open:
            self._open[file] = torch.load(file, map_location="cpu", mmap=True, weights_only=True)
        return self._open[file]

    def get(self, name: str, rows: slice | None = None, cols: slice | None = None) -> torch.Tensor:
        """Read `name` (optionally only rows/cols of a 2-D tensor) as a CPU tensor.

        Raises:
            KeyError: when the tensor is absent.
        """
        if name not in self._file_of:
            raise KeyError(f"{self.path}: tensor {name!r} not found")
        file = self._file_of[name]
        rows = rows or slice(None)
        cols = cols or slice(None)
        if file.suffix == ".safetensors":
            from safetensors import safe_open

            if file not in self._open:
                self._open[file] = safe_open(str(file), framework="pt")
            tensor_slice = self._open[file].get_slice(name)
            if len(tensor_slice.get_shape()) == 1:
                return tensor_slice[rows]
            return tensor_slice[rows, cols]
        tensor = self._bin(file)[name]
        return (tensor[rows] if tensor.dim() == 1 else tensor[rows, cols]).clone()

    def shape(self, name: str) -> tuple[int, ...]:
        """Shape of `name` without reading it."""
        file = self._file_of[name]
        if file.suffix == ".safetensors":
            from safetensors import safe_open

            if file not in self._open:
                self._open[file] = safe_open(str(file), framework="pt")
            return tuple(self._open[file].get_slice(name).get_shape())
        return tuple(self._bin(file)[name].shape)


def find_prefix(checkpoint: HFCheckpoint) -> str:
    """'model.' for *ForCausalLM folders, '' for bare LlamaModel/Qwen3Model folders."""
    if "model.embed_tokens.weight" in checkpoint:
        return "model."
    if "embed_tokens.weight" in checkpoint:
        return ""
    raise KeyError(f"{checkpoint.path}: neither 'model.embed_tokens.weight' nor 'embed_tokens.weight' found")

