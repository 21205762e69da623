"""Put a local model folder into an offline Hugging Face cache, so tests can pass hub ids
(`org/name`) with `HF_HOME` pointing at the cache and `HF_HUB_OFFLINE=1`, as the seed's commands do.

The layout is huggingface_hub's own: `HF_HOME/hub/models--org--name/` with `blobs/<sha256>`,
`snapshots/<revision>/<file>` symlinks to the blobs (plain copies where symlinks are not
allowed) and `refs/main` naming the revision.
"""
from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def put_in_hf_cache(folder: str | os.PathLike, repo_id: str, hf_home: str | os.PathLike) -> None:
    """Store every file of `folder` as the `main` revision of model `repo_id` under `hf_home/hub`.

    The revision is derived from the files' names and contents, so the same folder gives the same
    revision and a changed folder a new one; storing again replaces that snapshot.
    """
    folder, hf_home = Path(folder), Path(hf_home)
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise ValueError(f"repo_id must look like 'org/name', got {repo_id!r}")
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    if not files:
        raise ValueError(f"{folder}: no files to put in the cache")
    repo = hf_home / "hub" / ("models--" + repo_id.replace("/", "--"))
    digests = {p.relative_to(folder).as_posix(): _sha256(p) for p in files}
    # A git-like 40-hex revision: huggingface_hub only accepts commit hashes of that shape in refs/.
    revision = hashlib.sha1("".join(f"{n}\0{d}\n" for n, d in digests.items()).encode()).hexdigest()
    snapshot = repo / "snapshots" / revision
    if snapshot.exists():
        shutil.rmtree(snapshot)
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    for src in files:
        name = src.relative_to(folder).as_posix()
        blob = repo / "blobs" / digests[name]
        if not blob.exists():
            shutil.copyfile(src, blob)
        link = snapshot / name
        link.parent.mkdir(parents=True, exist_ok=True)
        try:
            link.symlink_to(os.path.relpath(blob, link.parent))
        except OSError:
            shutil.copyfile(blob, link)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(revision)
