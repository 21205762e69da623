"""What users serve is what they trained: Megatron training forward == transformers serving path."""
import re

from tests.launch import run_torchrun


def test_training_and_serving_logits_agree(tmp_path):
    out = run_torchrun("tests.workers.train_serving_consistency", 1, str(tmp_path), timeout=400)
    checks = {m.group(1): float(m.group(2)) for m in re.finditer(r"CHECK (\S+) (\S+)", out)}
    assert len(re.findall(r"max abs diff", out)) >= 6, out[-3000:]
    assert checks["serving_logits_max_abs_diff"] <= 1e-4, out[-3000:]
