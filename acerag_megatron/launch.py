"""`python -m acerag_megatron.launch <torchrun flags> -m acerag_megatron.train_compressive_encoder ...`:
torchrun, same flags, except that a requested stop ends the job with the workers' exit status.

Plain torchrun answers SIGTERM by forwarding it to the workers, killing them after
--shutdown-timeout (30 s) and exiting 1 whatever they did; SIGUSR1 (Slurm's early warning)
ends it at once unless it is in --signals-to-handle, and then it acts as SIGTERM does. Here both
are passed on to the workers, which stop at the same step, save and exit 0, so the agent sees
its workers succeed and exits 0. A SIGTERM still bounds the stop as torchrun does: workers alive
--shutdown-timeout seconds later are killed (and the launcher exits 1). A failed worker has
printed its error: the launcher adds one line naming it instead of torchrun's failure report.
"""
from __future__ import annotations

import os
import signal
import sys
import threading

import psutil
from torch.distributed import run as torchrun
from torch.distributed.elastic.multiprocessing.api import SignalException
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError, record

FORWARDED = (signal.SIGTERM, signal.SIGUSR1)


class _Forwarder:
    def __init__(self, grace_s: float):
        self.grace_s = grace_s
        self.deadline: threading.Timer | None = None

    def __call__(self, signum, _frame):
        workers = psutil.Process().children()
        if not workers:
            # Still in rendezvous, no worker to stop: end as torchrun would.
            raise SignalException(f"Process {os.getpid()} got signal: {signum}", sigval=signal.Signals(signum))
        name = signal.Signals(signum).name
        for w in workers:
            try:
                os.kill(w.pid, signum)  # the worker only: its own helpers are not told to stop
            except ProcessLookupError:
                pass
        bound = ""
        if signum == signal.SIGTERM:
            bound = f"; killed if still running in {self.grace_s:.0f} s"
            if self.deadline is None:
                self.deadline = threading.Timer(self.grace_s, self._kill, args=(workers,))
                self.deadline.daemon = True
                self.deadline.start()
        print(f"launcher: {name} passed to {len(workers)} worker(s): they save and exit{bound}",
              file=sys.stderr, flush=True)

    def _kill(self, workers: list[psutil.Process]):
        alive = [w for w in workers if w.is_running()]
        if alive:
            print(f"launcher: {len(alive)} worker(s) still running {self.grace_s:.0f} s after SIGTERM; killing them",
                  file=sys.stderr, flush=True)
        for w in alive:
            try:
                os.killpg(w.pid, signal.SIGKILL)  # torchrun starts each worker as its own group's leader
            except (ProcessLookupError, PermissionError):
                pass


@record
def main(argv: list[str] | None = None) -> None:
    args = torchrun.parse_args(argv)
    names = {s.name for s in FORWARDED}
    # torchrun registers its own handler only for the signals listed here: leave ours to us.
    args.signals_to_handle = ",".join(s for s in args.signals_to_handle.split(",") if s.strip() not in names)
    grace = args.shutdown_timeout
    if grace is None:
        grace = int(os.environ.get("TORCH_ELASTIC_SHUTDOWN_TIMEOUT", "30"))
    forward = _Forwarder(grace)
    for sig in FORWARDED:
        signal.signal(sig, forward)
    try:
        torchrun.run(args)
    except ChildFailedError as e:
        # The worker has printed its error; torchrun's report of it would bury that line.
        rank, failure = e.get_first_failure()
        print(f"launcher: worker rank {rank} exited {failure.exitcode} (its output is above)", file=sys.stderr,
              flush=True)
        sys.exit(failure.exitcode if failure.exitcode > 0 else 1)


if __name__ == "__main__":
    main()
