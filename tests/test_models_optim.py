"""DistributedOptimizer resume with the optimizer fixes: saved after one step, resumed at TP=1 and
at TP=2 with sequence parallel, the next losses equal an uninterrupted run."""
from tests.launch import run_torchrun
from tests.workers.models_report import parse_checks


def test_resume_is_exact(tmp_path):
    checks = parse_checks(run_torchrun("tests.workers.models_optim", 2, str(tmp_path), timeout=240))
    assert checks["training_changes_loss"] > 1e-4  # the steps really train
    assert checks["resume_tp1_loss_diff"] <= 1e-6
    assert checks["resume_tp2_loss_diff"] <= 1e-5
