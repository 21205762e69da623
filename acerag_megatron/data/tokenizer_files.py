"""The files that make up a tokenizer, for a local folder or a Hugging Face hub id, and their hash.

The hash keys the preprocessing cache and is recorded in each manifest, so it must depend on
the tokenizer alone: a model folder's weights (~13 GB for Llama-2-7B) are never read, and the
same tokenizer gives the same hash as a folder, a hub id or a tokenizer-only copy.
"""
from __future__ import annotations

import functools
import hashlib
from pathlib import Path

TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json",
                   "added_tokens.json", "chat_template.jinja", "chat_template.json", "vocab.json", "merges.txt")
"""Every file transformers may read to build a tokenizer and its chat template."""


def tokenizer_files(name_or_path: str | Path) -> dict[str, Path]:
    """{file name: local path} of the tokenizer files of a folder or hub id (hub files come from
    huggingface_hub: downloaded when online, the local cache only with HF_HUB_OFFLINE=1).

    Raises:
        ValueError: no tokenizer file found.
    """
    folder = Path(name_or_path)
    if folder.is_dir():
        found = {n: folder / n for n in TOKENIZER_FILES if (folder / n).is_file()}
        where = "folder"
    else:
        found = dict(_hub_tokenizer_files(str(name_or_path)))
        where = "local folder or hub id in the Hugging Face cache"
    if not found:
        raise ValueError(f"{name_or_path}: no tokenizer files ({', '.join(TOKENIZER_FILES[:4])}, ...) "
                         f"found as a {where}")
    return found


@functools.lru_cache(maxsize=None)
def _hub_tokenizer_files(repo_id: str) -> tuple[tuple[str, Path], ...]:
    # Cached per process: online, each lookup is an HTTP request and the hash is asked for per data file.
    from huggingface_hub import constants, hf_hub_download, try_to_load_from_cache
    from huggingface_hub.errors import EntryNotFoundError

    found = []
    for name in TOKENIZER_FILES:
        if not constants.HF_HUB_OFFLINE:
            try:
                found.append((name, Path(hf_hub_download(repo_id, name))))
                continue
            except EntryNotFoundError:  # not in the repo (or not reachable and not cached)
                continue
            except Exception:  # noqa: BLE001 - network or auth trouble: the cache below is the fallback
                pass
        cached = try_to_load_from_cache(repo_id, name)
        if isinstance(cached, str):  # the alternatives are None (unknown) and a "known missing" marker
            found.append((name, Path(cached)))
    return tuple(found)


def tokenizer_hash(name_or_path: str | Path) -> str:
    """Hex SHA-256 over the names and bytes of the tokenizer's own files (see TOKENIZER_FILES).

    Raises:
        ValueError: no tokenizer file found.
    """
    h = hashlib.sha256()
    for name, path in sorted(tokenizer_files(name_or_path).items()):
        h.update(name.encode() + b"\0")
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        h.update(b"\0")
    return h.hexdigest()
