"""One run per output folder: rank 0 holds an fcntl lock on `<output_dir>/.run.lock`.

A resubmitted job must not train alongside survivors of the previous one in the same folder
(both would write the same checkpoints). The kernel drops a POSIX lock when its holder exits,
however it exits, so the file of a dead run never blocks; while held, the file names the
holder for the error a second run prints. POSIX locks are not inherited by forked children,
so no helper process can keep a folder locked after the run is gone.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path

LOCK_NAME = ".run.lock"


class RunLock:
    """A held lock; `release` (or process exit) frees it."""

    def __init__(self, fd: int | None, path: Path):
        self.fd, self.path = fd, path

    def release(self) -> None:
        if self.fd is None:
            return
        os.ftruncate(self.fd, 0)  # the holder's record would name a run that has ended
        fcntl.lockf(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
        self.fd = None


def _holder(fd: int) -> str:
    try:
        rec = json.loads(os.pread(fd, 4096, 0).decode())
        return f"{rec['host']} pid {rec['pid']} (since {rec['since']})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process (it has not recorded itself yet)"


def lock_output_dir(output_dir: str | os.PathLike) -> RunLock:
    """Take the folder's lock, or stop with `error: --output_dir DIR: in use by HOST pid PID ...`."""
    root = Path(output_dir)
    path = root / LOCK_NAME
    try:
        root.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise SystemExit(f"error: --output_dir {output_dir}: cannot create {path.name} ({e.strerror})")
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        holder = _holder(fd) if e.errno in (errno.EACCES, errno.EAGAIN) else None
        os.close(fd)
        if holder is not None:
            raise SystemExit(f"error: --output_dir {output_dir}: in use by {holder}; "
                             "stop that run or choose another --output_dir")
        # A file system without POSIX locks (ENOLCK) must not make every run impossible.
        print(f"warning: --output_dir {output_dir}: cannot lock {path.name} ({e.strerror}); "
              "nothing stops a second run from using this folder at the same time", file=sys.stderr, flush=True)
        return RunLock(None, path)
    record = {"host": socket.gethostname(), "pid": os.getpid(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(record).encode(), 0)
    return RunLock(fd, path)
