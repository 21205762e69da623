"""Run the real command lines as users do (a plain process, or torchrun with N ranks) and check
that a user mistake ends with exactly one `error:` line, no traceback and a non-zero exit.

torchrun itself prints a launcher traceback (ChildFailedError) whenever a rank exits non-zero;
that block is the launcher's, not ours, and is cut off before the checks.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

from tests.launch import ROOT, free_port

ENV = {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"}


def command(target: list[str], nproc: int | None) -> list[str]:
    """target: ["-m", module] or [script]; nproc None = a plain process, else torchrun."""
    if nproc is None:
        return [sys.executable, *target]
    return [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}", "--master-addr=127.0.0.1",
            f"--master-port={free_port()}", *target]


def run(target: list[str], *args: str, nproc: int | None = None, timeout: float = 240) -> tuple[int, str]:
    """(exit code, stdout + stderr) of one command line; killed with its process group on timeout."""
    env = {**os.environ, **ENV, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([*command(target, nproc), *args], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        raise AssertionError(f"{target} {args} timed out after {timeout}s:\n{out[-4000:]}")
    return proc.returncode, out


def run_all(cases: dict[str, tuple], workers: int = 3) -> dict[str, tuple[int, str]]:
    """Run many (target, args, nproc) cases a few at a time: they are short and mostly start-up."""
    def one(case):
        target, args, nproc = case
        return run(target, *args, nproc=nproc)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return dict(zip(cases, pool.map(one, cases.values())))


def run_in_one_process(*calls: tuple[str, list]) -> list[dict]:
    """Call each (module, argv)'s main(argv) in one process (tests/workers/cli_calls.py); results in order."""
    payload = json.dumps([[module, [str(a) for a in args]] for module, args in calls])
    rc, out = run(["-m", "tests.workers.cli_calls"], payload, timeout=400)
    assert rc == 0, out[-5000:]
    results = [json.loads(line[len("RESULT "):]) for line in out.splitlines() if line.startswith("RESULT ")]
    assert len(results) == len(calls), out[-5000:]
    return results


def ours(out: str) -> str:
    """The output without torchrun's own failure report (its traceback and the Failures block)."""
    start = out.rfind("Traceback (most recent call last):")
    if start != -1 and "torch/distributed/run.py" in out[start:] and "ChildFailedError" in out[start:]:
        return out[:start]
    return out


def assert_one_error(result: tuple[int, str], *needles: str) -> str:
    """Exactly one line `error: ...` that contains every needle, no traceback, non-zero exit; returns the line."""
    rc, out = result
    text = ours(out)
    lines = [ln for ln in text.splitlines() if ln.startswith("error:")]
    assert rc != 0, out[-3000:]
    assert "Traceback" not in text, out[-5000:]
    assert len(lines) == 1, out[-5000:]
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]
