"""tools/benchmark.py runs on CPU with --model tiny and reports what the README table uses."""
import json
import os
import subprocess
import sys

import pytest

from tests.launch import ROOT, free_port


@pytest.mark.parametrize("mode", ["pretrain", "finetune"])
def test_tiny_benchmark_prints_json(mode, tmp_path):
    out = tmp_path / "bench.json"
    env = {**os.environ, "MASTER_PORT": str(free_port()), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "tools/benchmark.py", "--model", "tiny", "--mode", mode, "--steps", "2",
                           "--warmup", "1", "--profile-steps", "1", "--output", str(out)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    for key in ("step_time_s", "tokens_per_s", "samples_per_s", "model_tflops_per_gpu", "mfu", "peak_memory_gib"):
        assert result[key] > 0, key
    assert result["device"].startswith("device=cpu")
    if mode == "pretrain":
        assert result["lm_tokens_packed"] < result["lm_tokens_loop"]
    profile = result["profile"]
    shares = {name: row["share"] for name, row in profile["by_category"].items()}
    assert abs(sum(shares.values()) - 1) < 1e-6
    assert shares["gemm"] > 0 and shares["attention"] > 0
    assert "where the CPU time goes" in proc.stderr


def test_gpu_profile_counts_each_kernel_once():
    from types import SimpleNamespace

    import torch

    from acerag_megatron.training.step_profile import own_time_us

    cuda, cpu = torch.autograd.DeviceType.CUDA, torch.autograd.DeviceType.CPU
    kernel = SimpleNamespace(device_type=cuda, is_user_annotation=False, self_device_time_total=7.0, self_cpu_time_total=0)
    launcher = SimpleNamespace(device_type=cpu, is_user_annotation=False, self_device_time_total=7.0,
                               self_cpu_time_total=3.0)  # aten::mm reports its kernel's time as its own
    annotation = SimpleNamespace(device_type=cuda, is_user_annotation=True, self_device_time_total=7.0,
                                 self_cpu_time_total=0)
    assert [own_time_us(e, cuda=True) for e in (kernel, launcher, annotation)] == [7.0, 0, 0]
    assert own_time_us(launcher, cuda=False) == 3.0
