"""Packed single-pass and batched window training equal the reference per-window loop; several
window-mode documents in one packed row, and packed finetune micro-batches, equal samples one by one."""
import re

import pytest

from tests.launch import run_torchrun


def test_window_formulations_match_reference_loop(tmp_path):
    out = run_torchrun("tests.workers.train_packing_equivalence", 1, str(tmp_path), timeout=300)
    checks = {m.group(1): float(m.group(2)) for m in re.finditer(r"CHECK (\S+) (\S+)", out)}
    assert checks["window_loss_rel_diff"] <= 1e-6, out[-3000:]
    assert checks["window_grad_rel_diff"] <= 1e-5, out[-3000:]
    assert checks["window_documents_packed_loss_rel_diff"] <= 1e-6, out[-3000:]
    assert checks["window_documents_packed_grad_rel_diff"] <= 1e-5, out[-3000:]
    assert checks["finetune_packed_loss_rel_diff"] <= 1e-6, out[-3000:]
    assert checks["finetune_packed_grad_rel_diff"] <= 1e-5, out[-3000:]


def test_trainer_packs_window_documents_with_the_same_losses(assets, tmp_path):
    import json

    from tests.test_train_e2e import TRAINER, _pretrain_args

    runs = {}
    for name, extra in (("one_per_micro_batch", []), ("packed", ["--max_tokens_per_micro_batch", "100000"])):
        out = tmp_path / name
        log = run_torchrun(TRAINER, 1, *_pretrain_args(assets, out, "--max_steps", "2", "--global_batch_size", "3",
                                                       "--save_strategy", "no", *extra))
        runs[name] = [json.loads(line) for line in open(out / "metrics.jsonl")]
    for one, packed in zip(runs["one_per_micro_batch"], runs["packed"]):
        assert packed["loss"] == pytest.approx(one["loss"], rel=1e-6)
        assert packed["grad_norm"] == pytest.approx(one["grad_norm"], rel=1e-5)
    assert len(runs["packed"]) == 2
