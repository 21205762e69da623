"""Resume at another TP and DP size through the trainer's own save and resume: checkpoint-2 of a
TP=1 x DP=2 run continues at TP=2 x DP=1 and at TP=1 x DP=1 with the uninterrupted run's
losses (the distributed optimizer's state is saved fully reshardable)."""
import shutil

import pytest

from tests.launch import run_torchrun
from tests.test_train_e2e import TRAINER, _finetune_args, _metrics


def _run(assets, out, nproc, *extra):
    return run_torchrun(TRAINER, nproc, *_finetune_args(
        assets, out, "--max_steps", "4", "--global_batch_size", "2", "--save_strategy", "steps",
        "--save_steps", "2", *extra))


def test_resume_at_another_tp_and_dp_size(assets, tmp_path):
    base = tmp_path / "tp1_dp2"
    _run(assets, base, 2)
    assert (base / "checkpoint-2").is_dir()
    ref = _metrics(base)
    for name, nproc, extra in (("tp2_dp1", 2, ["--tensor_model_parallel_size", "2"]), ("tp1_dp1", 1, [])):
        out = tmp_path / name
        out.mkdir()
        shutil.copytree(base / "checkpoint-2", out / "checkpoint-2")
        text = _run(assets, out, nproc, *extra)
        assert "resumed from" in text and "at step 2" in text, text[-3000:]
        got = _metrics(out)
        assert sorted(got) == [3, 4], name
        for step in (3, 4):
            assert got[step]["loss"] == pytest.approx(ref[step]["loss"], abs=1e-5), (name, step)
            assert got[step]["grad_norm"] == pytest.approx(ref[step]["grad_norm"], rel=1e-4), (name, step)
            assert got[step]["lr"] == pytest.approx(ref[step]["lr"]), (name, step)
    assert ref[4]["loss"] != pytest.approx(ref[3]["loss"], abs=1e-6)  # it trains
