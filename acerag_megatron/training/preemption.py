"""Stop requests and the launcher's lifetime, for one training worker.

SIGTERM (what Slurm and most schedulers send at pre-emption, and what torchrun forwards) and
SIGUSR1 (the early warning of `#SBATCH --signal=USR1@180`) only set a flag; the trainer's ranks
agree on it after a step (`agree`), save at that step and exit 0. Under torchrun the worker also
dies with its agent: each worker is started in its own session, so killing the agent's process
group does not reach it, and without this it would train on alone.
"""
from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time

import torch
import torch.distributed as dist

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)
PR_SET_PDEATHSIG = 1  # linux/prctl.h
WATCHDOG_INTERVAL_S = 1.0


class StopRequest:
    """Records the stop signals this process receives (after `install`)."""

    def __init__(self):
        self.signal_name: str | None = None

    def install(self) -> None:
        for sig in STOP_SIGNALS:
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum, _frame):
        # Only a flag: the step, or the save, in progress finishes, and the ranks stop together.
        self.signal_name = signal.Signals(signum).name

    def agree(self, device: str) -> bool:
        """Collective: True on every rank when any rank has received a stop signal."""
        flag = torch.tensor([0.0 if self.signal_name is None else 1.0], device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())


def launched_by_torchrun() -> bool:
    return "TORCHELASTIC_RUN_ID" in os.environ


def exit_with_launcher() -> None:
    """Under torchrun, end this process as soon as the agent that started it is gone.

    The kernel's parent-death signal (Linux) does it at once; a watchdog thread polling the
    parent pid covers other systems and a failed prctl. Outside torchrun (a plain process
    started from a shell) nothing is armed: a training run may outlive its shell.
    """
    if not launched_by_torchrun():
        return
    parent = os.getppid()
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):
            pass  # the watchdog below still ends the process
    # The agent may have died before prctl took effect: then the parent has already changed.
    if os.getppid() != parent:
        _launcher_gone(parent)
    threading.Thread(target=_watch_parent, args=(parent,), name="launcher-watchdog", daemon=True).start()


def _watch_parent(parent: int) -> None:
    while True:
        time.sleep(WATCHDOG_INTERVAL_S)
        if os.getppid() != parent:
            _launcher_gone(parent)


def _launcher_gone(parent: int) -> None:
    print(f"error: launcher (pid {parent}) is gone; exiting", file=sys.stderr, flush=True)
    os._exit(1)
