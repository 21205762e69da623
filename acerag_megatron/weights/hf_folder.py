"""Read a Hugging Face model folder (or hub id) lazily, tensor slice by tensor slice.

Supports safetensors and PyTorch .bin weights, single-file or sharded with an index json.
Each rank reads only the rows/columns it owns (safetensors get_slice). A folder or hub repo is
read in one weight format only: safetensors when an index or file exists, .bin otherwise, so
a hub repo that ships both (Llama-2-7b-chat-hf) is fetched once, not twice.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch

# One (index, single file) pair per format, in order of preference.
_FORMATS = (("model.safetensors.index.json", "model.safetensors"),
            ("pytorch_model.bin.index.json", "pytorch_model.bin"))
_RESOLVED: dict[str, Path] = {}


def _fetch(repo_id: str, name: str, revision: str | None = None, local_files_only: bool = False) -> Path | None:
    """One file of a hub repo through the HF cache (HF_HUB_OFFLINE honoured); None when absent."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    try:
        return Path(hf_hub_download(repo_id, name, revision=revision, local_files_only=local_files_only))
    except EntryNotFoundError:  # offline: not cached; online: not in the repo
        return None


def hub_config_file(repo_id: str, *, local_files_only: bool = False) -> Path:
    """config.json of a hub repo, from the HF cache or the hub; its folder is the snapshot.

    Raises:
        FileNotFoundError: an invalid id, a missing, private or gated repo, or no config.json.
    """
    from huggingface_hub.errors import GatedRepoError, HFValidationError, RepositoryNotFoundError

    try:
        config = _fetch(repo_id, "config.json", local_files_only=local_files_only)
    except HFValidationError as e:
        raise FileNotFoundError(f"{repo_id}: not a local folder, and not a valid hub id") from e
    except GatedRepoError as e:
        raise FileNotFoundError(f"{repo_id}: gated on the hub; accept its license and log in (hf auth login)") from e
    except RepositoryNotFoundError as e:
        raise FileNotFoundError(f"{repo_id}: not a local folder, and no such repo on the hub (or it is private)") from e
    if config is None:
        raise FileNotFoundError(f"{repo_id}: not a local folder, and config.json is not on the hub or in the "
                                f"HF cache{' (offline)' if _offline(local_files_only) else ''}")
    return config


def _hub_weights(repo_id: str, *, local_files_only: bool = False) -> Path:
    """Fetch config.json and one weight format of a hub repo; return the snapshot folder."""
    snapshot = hub_config_file(repo_id, local_files_only=local_files_only).parent
    # Every later file comes from the commit config.json was resolved at, even if the repo moves on.
    revision = snapshot.name

    def fetch(name: str) -> Path | None:
        return _fetch(repo_id, name, revision, local_files_only)

    for index_name, single in _FORMATS:
        index = fetch(index_name)
        if index is not None:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            missing = [s for s in shards if fetch(s) is None]
            if missing:
                raise FileNotFoundError(f"{repo_id}: {index_name} lists {', '.join(missing)}, "
                                        f"not found{' in the HF cache (offline)' if _offline(local_files_only) else ''}")
            return snapshot
        if fetch(single) is not None:
            return snapshot
    raise FileNotFoundError(f"{repo_id}: no model.safetensors / pytorch_model.bin (or index json) on the hub "
                            "or in the HF cache")


def _offline(local_files_only: bool) -> bool:
    from huggingface_hub import constants

    return local_files_only or bool(constants.HF_HUB_OFFLINE)


def resolve_hf_path(name_or_path: str) -> Path:
    """A local folder as is; otherwise a hub id fetched through the HF cache (config + one weight format).

    Raises:
        FileNotFoundError: neither a folder nor a hub repo with config.json and weights.
    """
    path = Path(name_or_path)
    if path.is_dir():
        return path
    key = str(name_or_path)
    if key not in _RESOLVED:
        _RESOLVED[key] = _hub_weights(key)
    return _RESOLVED[key]


def resolve_on_each_node(flags: dict[str, str]) -> None:
    """Collective: local rank 0 of every node fetches the hub ids among the values of `flags`
    (flag name -> folder or hub id) first, then the other ranks find them in the node's cache,
    so each node downloads a model once.

    A rank whose cache the first one did not fill (a per-rank HF_HOME) fetches for itself.

    Raises:
        SystemExit: `error: --<flag> <id>: <cause>` when a hub id has no config or weights.
    """
    import torch.distributed as dist

    hub_ids = {str(name): flag for flag, name in flags.items() if not Path(name).is_dir()}
    first = int(os.environ.get("LOCAL_RANK", "0")) == 0

    def fetch(name: str) -> None:
        try:
            resolve_hf_path(name)
        except FileNotFoundError as e:
            raise SystemExit(f"error: --{hub_ids[name]} {e}") from None

    if first:
        for name in hub_ids:
            fetch(name)
    if dist.is_initialized():
        dist.barrier()
    if not first:
        for name in hub_ids:
            if name in _RESOLVED:
                continue
            try:
                _RESOLVED[name] = _hub_weights(name, local_files_only=True)
            except FileNotFoundError:
                fetch(name)


def chosen_weight_file(folder: Path) -> Path | None:
    """The index json or single weight file a local folder is read through (_FORMATS order)."""
    for index_name, single in _FORMATS:
        for name in (index_name, single):
            if (folder / name).exists():
                return folder / name
    return None


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
        chosen = chosen_weight_file(self.path)
        if chosen is not None and chosen.name.endswith(".index.json"):
            weight_map = json.loads(chosen.read_text())["weight_map"]
            self._file_of = {k: self.path / v for k, v in weight_map.items()}
        elif chosen is not None:
            self._file_of = {k: chosen for k in self._keys_in(chosen)}
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

