"""Launch a multi-rank worker under torchrun in its own process group, killed on timeout.

Workers live in tests/workers/ and run as modules (`python -m tests.workers.<name>`), which
keeps the `__main__` guard that torch_dist checkpointing needs (its writer spawns processes).
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_torchrun(module: str, nproc: int, *args: str, timeout: float = 300, env: dict | None = None) -> str:
    """Run `torchrun --nproc-per-node nproc -m module args...`; return stdout+stderr, raise on failure."""
    cmd = [
        sys.executable, "-m", "torch.distributed.run",
        f"--nproc-per-node={nproc}", "--master-addr=127.0.0.1", f"--master-port={free_port()}",
        "-m", module, *args,
    ]
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    full_env.update(env or {})
    proc = subprocess.Popen(cmd, cwd=ROOT, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        raise AssertionError(f"{module} timed out after {timeout}s:\n{out[-6000:]}")
    if proc.returncode != 0:
        raise AssertionError(f"{module} exited {proc.returncode}:\n{out[-8000:]}")
    return out
