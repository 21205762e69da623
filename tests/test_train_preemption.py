"""Pre-emption under torchrun (2 ranks, CPU, gloo): stop signals save at an agreed step and
exit 0, workers die with their agent, and one run per output folder.

Every job runs in its own session and is killed, workers included, when a test ends."""
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time

import psutil
import pytest

from tests.launch import ROOT, free_port, run_torchrun
from tests.test_train_e2e import TRAINER, _metrics, _pretrain_args

TORCHRUN, LAUNCHER = "torch.distributed.run", "acerag_megatron.launch"
STEPS = 12
# A save every 2 steps; the signals come after the first one.
ARGS = ("--max_steps", str(STEPS), "--global_batch_size", "2", "--save_strategy", "steps", "--save_steps", "2")


class Job:
    """A torchrun-style launcher with 2 workers; its output is read on a thread."""

    def __init__(self, launcher: str, args: list[str]):
        cmd = [sys.executable, "-m", launcher, "--nproc-per-node=2", "--master-addr=127.0.0.1",
               f"--master-port={free_port()}", "-m", TRAINER, *args]
        env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, start_new_session=True)
        self.lines: list[str] = []
        self._queue: queue.Queue = queue.Queue()
        self._workers: list[psutil.Process] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self._queue.put(line)
        self._queue.put(None)

    @property
    def text(self) -> str:
        return "".join(self.lines)

    def wait_for(self, prefix: str, timeout: float = 240) -> str:
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                line = self._queue.get(timeout=1)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError(f"exited {self.proc.wait()} before {prefix!r}:\n{self.text[-6000:]}")
            self.lines.append(line)
            if line.startswith(prefix):
                return line
        raise AssertionError(f"no {prefix!r} within {timeout} s:\n{self.text[-6000:]}")

    def workers(self) -> list[psutil.Process]:
        self._workers = self._workers or psutil.Process(self.proc.pid).children()
        assert len(self._workers) == 2, self._workers
        return self._workers

    def finish(self, timeout: float = 180) -> int:
        rc = self.proc.wait(timeout=timeout)
        while (line := self._queue.get(timeout=30)) is not None:
            self.lines.append(line)
        return rc

    def kill(self):
        for p in self._workers:  # workers run in sessions of their own
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


@pytest.fixture
def jobs(assets):
    """start(launcher, out, *extra flags) -> a running Job of the tiny pretraining run."""
    started = []

    def start(launcher, out, *extra):
        started.append(Job(launcher, _pretrain_args(assets, out, *ARGS, *extra)))
        return started[-1]

    yield start
    for job in started:
        job.kill()


def _stop_step(text: str, name: str) -> int:
    m = re.search(rf"^{name}: (?:saved at|nothing trained since) step (\d+)", text, re.M)
    assert m, text[-4000:]
    return int(m.group(1))


def _assert_saved_at(out, step: int, text: str):
    names = {p.name for p in out.iterdir() if p.name.startswith("checkpoint-")}
    assert not [n for n in names if n.endswith(".tmp")], (names, text[-4000:])
    assert max(int(n.split("-")[1]) for n in names) == step, (names, text[-4000:])
    assert (out / f"checkpoint-{step}/compressive_encoder/model.safetensors").is_file()
    assert "BrokenPipeError" not in text and "Connection closed by peer" not in text, text[-4000:]


def test_sigterm_to_torchrun_after_a_save_saves_and_resumes_exactly(jobs, assets, tmp_path):
    """What users do: `kill <torchrun pid>` after the first checkpoint. torchrun
    sends SIGTERM to each worker's process group; megatron-core's forking writer (and its
    Manager process) lived there and the save died with BrokenPipeError, leaving a .tmp."""
    ref, out = tmp_path / "ref", tmp_path / "run"
    run_torchrun(TRAINER, 2, *_pretrain_args(assets, ref, *ARGS))
    job = jobs(TORCHRUN, out)
    job.wait_for("step 3 |")
    os.kill(job.proc.pid, signal.SIGTERM)
    job.finish()  # torchrun itself exits 1 after any SIGTERM, whatever its workers did
    text = job.text
    assert "save (est.)" in text
    stop = _stop_step(text, "SIGTERM")
    assert 3 <= stop < STEPS, text[-4000:]
    _assert_saved_at(out, stop, text)

    resumed = run_torchrun(TRAINER, 2, *_pretrain_args(assets, out, *ARGS))
    assert f"resumed from {out / f'checkpoint-{stop}'} at step {stop}" in resumed
    want, got = _metrics(ref), _metrics(out)
    for step in range(stop + 1, STEPS + 1):
        assert got[step]["loss"] == pytest.approx(want[step]["loss"], abs=1e-6), step
        assert got[step]["grad_norm"] == pytest.approx(want[step]["grad_norm"], rel=1e-5), step


def test_sigterm_to_the_launcher_exits_0_and_a_second_run_is_refused(jobs, tmp_path):
    out = tmp_path / "run"
    job = jobs(LAUNCHER, out, "--max_steps", "100000")  # still training when the second run starts
    job.wait_for("step 3 |")
    holder = job.workers()  # rank 0 is the first worker torchrun starts
    second = jobs(LAUNCHER, out)
    assert second.finish() != 0
    errors = [line for line in second.lines if line.startswith("error:")]
    assert errors and len(errors) == 1, second.text[-4000:]
    lock = json.loads((out / ".run.lock").read_text())
    assert errors[0].startswith(f"error: --output_dir {out}: in use by {lock['host']} pid {lock['pid']} ")
    assert lock["pid"] in {p.pid for p in holder}
    assert "Traceback" not in second.text, second.text[-4000:]

    os.kill(job.proc.pid, signal.SIGTERM)
    assert job.finish() == 0, job.text[-4000:]
    _assert_saved_at(out, _stop_step(job.text, "SIGTERM"), job.text)
    assert (out / ".run.lock").read_text() == ""  # released


def test_sigusr1_to_every_process_as_slurm_sends_it(jobs, tmp_path):
    """`#SBATCH --signal=USR1@180`: the launcher and each worker get SIGUSR1 at once."""
    out = tmp_path / "run"
    job = jobs(LAUNCHER, out, "--max_steps", "100000")
    job.wait_for("step 3 |")
    for pid in [job.proc.pid] + [p.pid for p in job.workers()]:
        os.kill(pid, signal.SIGUSR1)
    assert job.finish() == 0, job.text[-4000:]
    _assert_saved_at(out, _stop_step(job.text, "SIGUSR1"), job.text)


def test_workers_exit_when_the_agent_is_killed(jobs, tmp_path):
    """`kill -9` of torchrun's process group: the workers, in sessions of their own, used to
    train on to the end."""
    job = jobs(TORCHRUN, tmp_path / "run", "--max_steps", "100000")
    job.wait_for("step 2 |")
    workers = job.workers()
    os.killpg(job.proc.pid, signal.SIGKILL)
    gone, alive = psutil.wait_procs(workers, timeout=10)
    assert not alive, f"workers still running 10 s after the agent died: {alive}"


def test_output_dir_lock_names_its_holder_and_a_dead_holder_does_not_block(tmp_path):
    from acerag_megatron.training.run_lock import lock_output_dir

    out = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from acerag_megatron.training.run_lock import lock_output_dir; "
         "lock_output_dir(sys.argv[1]); print('locked', flush=True); time.sleep(120)", str(out)],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "locked\n"
        with pytest.raises(SystemExit) as refused:
            lock_output_dir(out)
        message = str(refused.value)
        assert message.startswith(f"error: --output_dir {out}: in use by ") and f" pid {holder.pid} " in message
        assert "\n" not in message
    finally:
        holder.kill()
        holder.wait()
    lock = lock_output_dir(out)  # the kernel dropped the dead holder's lock; its record is still there
    assert json.loads((out / ".run.lock").read_text())["pid"] == os.getpid()
    lock.release()
    lock_output_dir(out).release()
