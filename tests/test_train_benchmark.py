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


def _run_cli(*args, timeout=300):
    env = {**os.environ, "MASTER_PORT": str(free_port()), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "tools/benchmark.py", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_tiny_workload_benchmark_projects_dp8(tmp_path):
    """The CI run of the workload benchmark: measured lengths, DP=1 figures, DP=8 projected both ways,
    with the launch scripts' --gradient_checkpointing resolved by the trainer."""
    out = tmp_path / "workload.json"
    proc = _run_cli("--model", "tiny", "--length-dist", "lognormal:500:0.5", "--min_length", "300", "--max_length",
                    "1200", "--strata", "2", "--steps", "1", "--warmup", "1", "--samples", "2000", "--output", str(out),
                    "--", "--gradient_checkpointing")
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(out.read_text())
    assert r["benchmark"] == "workload" and r["device"].startswith("device=cpu")
    assert r["lengths"]["samples"] == 2000 and 300 < r["lengths"]["min"] <= r["lengths"]["max"] < 1200
    assert r["recompute_reason"] and r["recompute_encoder"] and r["recompute_lm"]
    lengths = [p["length"] for p in r["points"]]
    assert lengths == sorted(lengths) and lengths[0] == r["lengths"]["min"] and lengths[-1] == r["lengths"]["max"]
    for p in r["points"]:
        assert p["fits"] and p["steps_timed"] == 1 and p["step_time_s"] > 0 and p["cost_tflop"] > 0
    assert len(r["dp1_measured"]["lengths"]) == 2
    for key in ("tokens_per_s_per_gpu", "samples_per_s", "mfu"):
        assert r["dp1_measured"][key] > 0, key
    runs = {(p["dp"], p["grouped"]): p for p in r["projection"]}
    assert set(runs) == {(1, False), (8, False), (8, True)}
    assert runs[(1, False)]["dp_efficiency"] == 1.0
    assert runs[(8, True)]["dp_efficiency"] >= runs[(8, False)]["dp_efficiency"]
    assert runs[(8, True)]["tokens_per_s_per_gpu"] >= runs[(8, False)]["tokens_per_s_per_gpu"]
    for p in runs.values():
        assert p["tokens_per_s_per_gpu"] > 0 and p["samples_per_s"] > 0 and 0 < p["dp_efficiency"] <= 1
        (stage,) = p["stages"]
        assert stage["stage"] == "pretraining" and stage["samples"] == 90_000 and stage["wall_time_h"] > 0
    assert "DP=8" in proc.stderr and "grouped" in proc.stderr


@pytest.mark.parametrize("args, flag", [
    (["--lengths-from", "no/such/prefix"], "--lengths-from"),
    (["--length-dist", "gamma:3:1"], "--length-dist"),
    (["--length-dist", "lognormal:500:0.5", "--min_length", "600", "--max_length", "601"], "--length-dist"),
    (["--length-dist", "redpajama", "--lengths-from", "x"], "--length-dist"),
    (["--length-dist", "redpajama", "--", "--group_by_length"], "--group_by_length"),
])
def test_workload_mistakes_end_in_one_line(args, flag):
    proc = _run_cli("--model", "tiny", *args, timeout=120)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {flag}: "), proc.stderr[-2000:]
