"""Updates skipped for non-finite gradients whose loss is finite (bf16 and fp32 have no grad
scaler to catch them): the skip decision on the trainer's optimizer, and a trainer run whose
frozen LM makes the backward overflow."""
import json

import pytest

from tests.launch import run_torchrun
from tests.test_train_e2e import TRAINER, _finetune_args, _metrics
from tests.workers.models_report import parse_checks


def test_skip_decision_on_the_distributed_optimizer(tmp_path):
    checks = parse_checks(run_torchrun("tests.workers.optimizer_step", 2, str(tmp_path), timeout=240))
    assert checks["finite_updated"] == 1 and checks["finite_changed_weights"] == 1
    for bad in ("inf", "nan"):
        # Only rank 1's shard holds the bad value; the norm is reduced, so both ranks skip.
        assert checks[f"{bad}_skipped_rank0"] == 1 and checks[f"{bad}_skipped_rank1"] == 1, bad
        assert checks[f"{bad}_state_changed"] == 0, bad
    assert checks["after_skip_updated"] == 1
    assert checks["megatron_step_success_with_nan_weights"] == 1  # why the check exists


def _overflowing_lm(src: str, dst) -> str:
    """A copy of the tiny LM whose final-norm weight is 1e36: logits near 1e35 keep the cross
    entropy finite, but the gradient, 1e36 times larger than usual all the way down to the
    encoder, overflows float32 (and bf16, which has the same range)."""
    import shutil

    from safetensors.torch import load_file, save_file

    shutil.copytree(src, dst)
    weights = load_file(dst / "model.safetensors")
    weights["model.norm.weight"] = weights["model.norm.weight"] * 1e36
    save_file(weights, dst / "model.safetensors", metadata={"format": "pt"})
    return str(dst)


def test_finite_loss_with_overflowing_gradient_skips_the_update(assets, tmp_path):
    out = tmp_path / "overflow"
    lm = _overflowing_lm(assets["llama"], tmp_path / "lm_overflow")
    args = _finetune_args(assets, out, "--max_steps", "6", "--warmup_ratio", "0", "--max_nonfinite_steps", "3",
                          "--bf16", "True")
    args[args.index("--language_model_name_or_path") + 1] = lm
    with pytest.raises(AssertionError) as failed:
        run_torchrun(TRAINER, 1, *args, "--encoder_name_or_path", assets["llama"])
    text = str(failed.value)
    assert "step 1: non-finite gradient norm inf (loss 4" in text and "update skipped (1 in a row)" in text
    assert "error: 3 consecutive non-finite steps" in text
    got = _metrics(out)
    assert sorted(got) == [1, 2]  # step 3 stopped the run before its record
    for r in got.values():
        assert r["grad_norm"] == float("inf") and 1e30 < r["loss"] < 1e38
    # Skipped steps still advance the schedule: linear decay over 6 steps from 1e-3.
    assert got[2]["lr"] == pytest.approx(1e-3 * 5 / 6)
    assert json.loads((out / "config.json").read_text())["bf16"] is True


def test_a_save_before_any_update_and_its_resume(assets, tmp_path):
    """Every step skipped, checkpoints saved all the same (the optimizer has no state yet), and
    the run resumes from them."""
    out = tmp_path / "overflow"
    lm = _overflowing_lm(assets["llama"], tmp_path / "lm_overflow")
    args = _finetune_args(assets, out, "--max_steps", "6", "--warmup_ratio", "0", "--max_nonfinite_steps", "2",
                          "--bf16", "True", "--encoder_name_or_path", assets["llama"])
    args[args.index("--save_strategy") + 1] = "steps"
    args += ["--save_steps", "1"]
    args[args.index("--language_model_name_or_path") + 1] = lm
    texts = []
    for _ in range(2):  # each run skips, saves, skips again and stops on --max_nonfinite_steps 2
        with pytest.raises(AssertionError) as failed:
            run_torchrun(TRAINER, 1, *args)
        texts.append(str(failed.value))
        assert "error: 2 consecutive non-finite steps" in texts[-1], texts[-1][-3000:]
    assert f"resumed from {out / 'checkpoint-1'}" in texts[1]
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]
