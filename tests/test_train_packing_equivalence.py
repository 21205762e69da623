"""Packed single-pass and batched window training equal the reference per-window loop;
packed finetune micro-batches equal samples one by one."""
import re

from tests.launch import run_torchrun


def test_window_formulations_match_reference_loop(tmp_path):
    out = run_torchrun("tests.workers.train_packing_equivalence", 1, str(tmp_path), timeout=300)
    checks = {m.group(1): float(m.group(2)) for m in re.finditer(r"CHECK (\S+) (\S+)", out)}
    assert checks["window_loss_rel_diff"] <= 1e-6, out[-3000:]
    assert checks["window_grad_rel_diff"] <= 1e-5, out[-3000:]
    assert checks["finetune_packed_loss_rel_diff"] <= 1e-6, out[-3000:]
    assert checks["finetune_packed_grad_rel_diff"] <= 1e-5, out[-3000:]
