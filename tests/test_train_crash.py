"""kill -9 of the whole job (agent and workers) in the middle of a checkpoint write: the rerun
resumes from the last complete checkpoint and ends with the uninterrupted run's losses and a
byte-identical encoder export."""
import hashlib
import time

from tests.launch import run_torchrun
from tests.test_train_e2e import TRAINER, _metrics, _pretrain_args
from tests.test_train_preemption import TORCHRUN, Job

STEPS = 5
ARGS = ("--max_steps", str(STEPS), "--global_batch_size", "2", "--save_strategy", "steps", "--save_steps", "1")


def _encoder_sha(out) -> str:
    return hashlib.sha256((out / f"checkpoint-{STEPS}/compressive_encoder/model.safetensors").read_bytes()).hexdigest()


def _kill_inside_a_save(job: Job, out, after_step: int, timeout: float = 240) -> str:
    """SIGKILL every process of the job as soon as a checkpoint-N.tmp (N > after_step) exists."""
    job.wait_for("acerag_megatron: compressive encoder training")
    job.workers()  # remembered now: the workers run in sessions of their own
    deadline = time.time() + timeout
    while time.time() < deadline:
        writing = [p.name for p in out.glob("checkpoint-*.tmp") if int(p.name[11:-4]) > after_step]
        if writing:
            job.kill()
            return writing[0]
        if job.proc.poll() is not None:
            break
        time.sleep(0.005)
    job.kill()
    raise AssertionError(f"no checkpoint write after step {after_step} was caught:\n{job.text[-4000:]}")


def test_kill_9_inside_a_checkpoint_write_resumes_exactly(assets, tmp_path):
    ref, out = tmp_path / "ref", tmp_path / "crash"
    run_torchrun(TRAINER, 2, *_pretrain_args(assets, ref, *ARGS))
    job = Job(TORCHRUN, _pretrain_args(assets, out, *ARGS))
    try:
        killed_in = _kill_inside_a_save(job, out, after_step=1)
    finally:
        job.kill()
    complete = sorted(int(p.name.split("-")[1]) for p in out.glob("checkpoint-*") if not p.name.endswith(".tmp"))
    assert complete and max(complete) < int(killed_in[11:-4]), (killed_in, complete)
    log = run_torchrun(TRAINER, 2, *_pretrain_args(assets, out, *ARGS))
    assert f"resumed from {out / f'checkpoint-{max(complete)}'}" in log, log[-3000:]
    assert not list(out.glob("checkpoint-*.tmp"))
    want, got = _metrics(ref), _metrics(out)
    for step in range(max(complete) + 1, STEPS + 1):
        assert abs(got[step]["loss"] - want[step]["loss"]) <= 1e-6, (step, got[step], want[step])
    assert _encoder_sha(out) == _encoder_sha(ref)
