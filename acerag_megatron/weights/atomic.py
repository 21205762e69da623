"""Atomic, durable writes of files and folders: write under a temporary name, fsync, rename,
fsync the parent folder. The one helper for temp-then-rename in the package."""
from __future__ import annotations

import errno
import os
import shutil
import socket
from pathlib import Path

# Folder fsync is refused with these on some file systems (and is then not needed there).
_DIR_FSYNC_UNSUPPORTED = (errno.EINVAL, errno.ENOTSUP, errno.EBADF, errno.EACCES)


def fsync_dir(path: Path) -> None:
    """Make a folder's entries (creations, renames) durable."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as e:
        if e.errno in _DIR_FSYNC_UNSUPPORTED:
            return
        raise
    try:
        os.fsync(fd)
    except OSError as e:
        if e.errno not in _DIR_FSYNC_UNSUPPORTED:
            raise
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    """fsync every file and folder under root (folders after their contents)."""
    for folder, _, files in os.walk(root, topdown=False):
        for name in files:
            path = os.path.join(folder, name)
            if os.path.islink(path):
                continue
            with open(path, "rb") as f:
                os.fsync(f.fileno())
        fsync_dir(Path(folder))


def temp_path(path: Path) -> Path:
    """The temporary name a write of path goes through: `.<name>.tmp-<host>-<pid>` beside it
    (hidden, and a stale one tells which host and process left it)."""
    path = Path(path)
    return path.parent / f".{path.name}.tmp-{socket.gethostname()}-{os.getpid()}"


def move_into_place(tmp: Path, path: Path) -> None:
    """Rename a finished temporary file onto path, its content fsynced before and the folder after."""
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(Path(path).parent)


def write_file(path: Path, data: bytes | str) -> None:
    """Write path atomically: readers see the old content or the new, never a partial file."""
    path = Path(path)
    tmp = temp_path(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)


def aside_name(path: Path) -> Path:
    """Where replace_dir and remove_dir move a folder before deleting it (hidden, so never read as a result)."""
    return path.parent / f".{path.name}.old"


def remove_dir(path: Path) -> None:
    """Delete a folder so that no half-deleted folder is ever left under its name."""
    path = Path(path)
    old = aside_name(path)
    shutil.rmtree(old, ignore_errors=True)
    if path.exists():
        os.replace(path, old)
        fsync_dir(path.parent)
    shutil.rmtree(old, ignore_errors=True)


def replace_dir(tmp: Path, out_dir: Path) -> None:
    """Rename tmp to out_dir after fsyncing its contents; an existing out_dir is moved aside first
    and removed after, so out_dir names a complete folder at every moment but one rename."""
    tmp, out_dir = Path(tmp), Path(out_dir)
    fsync_tree(tmp)
    old = aside_name(out_dir)
    shutil.rmtree(old, ignore_errors=True)
    if out_dir.exists():
        os.replace(out_dir, old)
    os.replace(tmp, out_dir)
    fsync_dir(out_dir.parent)
    shutil.rmtree(old, ignore_errors=True)
