"""The trainer end to end under torchrun (CPU, gloo): checkpoints with HF export, exact
resume, SIGTERM save, and the same losses for every parallel layout."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from tests.launch import ROOT, free_port, run_torchrun

TRAINER = "acerag_megatron.train_compressive_encoder"


def _pretrain_args(assets, out, *extra):
    return ["--language_model_name_or_path", assets["llama"], "--window_mode", "True", "--min_length", "256",
            "--max_length", "4000", "--encoder_num_hidden_layers", "2", "--window", "128",
            "--encoder_max_length", "512", "--comp_candidates", "1", "2", "4", "8",
            "--pretraining_down_scaling_method", "random", "--data_files", assets["files"]["redpajama"],
            "--output_dir", str(out), "--learning_rate", "5e-4", "--logging_steps", "1", *extra]


def _finetune_args(assets, out, *extra):
    return ["--language_model_name_or_path", assets["llama"], "--window_mode", "false", "--lm_max_length", "256",
            "--encoder_num_hidden_layers", "2", "--encoder_max_length", "128", "--comp_candidates", "1", "2", "4",
            "--down_scaling_method", "random", "--data_files", assets["files"]["longalpaca"],
            "--min_length", "64", "--max_length", "32000", "--learning_rate", "1e-3", "--stage", "ft",
            "--output_dir", str(out), "--logging_steps", "1", "--save_strategy", "no", *extra]


def _metrics(out):
    return {r["step"]: r for r in map(json.loads, open(os.path.join(out, "metrics.jsonl")))}


def test_pretrain_checkpoints_and_exact_resume(assets, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    # The fused AdamW (the GPU default) here, so its state goes through save and resume too.
    run_torchrun(TRAINER, 1, *_pretrain_args(assets, a, "--max_steps", "4", "--global_batch_size", "2",
                                             "--save_strategy", "steps", "--save_steps", "0.5",
                                             "--fused_optimizer", "True"))
    assert sorted(p.name for p in a.iterdir() if p.name.startswith("checkpoint-")) == ["checkpoint-2", "checkpoint-4"]
    ref = _metrics(a)
    assert len(ref) == 4 and all(len(r["window_loss"]) >= 1 for r in ref.values())
    assert ref[1]["lr"] == 0.0 and ref[2]["lr"] == pytest.approx(5e-4)  # 10% warm-up (1 step), then decay

    # A killed run resumes from its last complete checkpoint: copy checkpoint-2 and continue.
    b.mkdir()
    shutil.copytree(a / "checkpoint-2", b / "checkpoint-2")
    (b / "checkpoint-9.tmp").mkdir()  # an interrupted save is ignored
    out = run_torchrun(TRAINER, 1, *_pretrain_args(assets, b, "--max_steps", "4", "--global_batch_size", "2",
                                                   "--save_strategy", "steps", "--save_steps", "0.5",
                                                   "--fused_optimizer", "True"))
    assert "resumed from" in out
    got = _metrics(b)
    for step in (3, 4):
        assert got[step]["loss"] == pytest.approx(ref[step]["loss"], abs=1e-6)
        assert got[step]["grad_norm"] == pytest.approx(ref[step]["grad_norm"], rel=1e-5)

    import torch
    from safetensors.torch import load_file
    from transformers import AutoModel

    wa = load_file(a / "checkpoint-4/compressive_encoder/model.safetensors")
    wb = load_file(b / "checkpoint-4/compressive_encoder/model.safetensors")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    enc = AutoModel.from_pretrained(a / "checkpoint-4/compressive_encoder")
    assert enc.config.num_hidden_layers == 2 and type(enc).__name__ == "LlamaModel"
    init = load_file(os.path.join(assets["llama"], "model.safetensors"))
    name = "model.embed_tokens.weight" if "model.embed_tokens.weight" in init else "embed_tokens.weight"
    assert not torch.equal(wa["embed_tokens.weight"], init[name].to(wa["embed_tokens.weight"].dtype))  # it trained


def _losses_and_grad_norms(out) -> tuple[list[float], list[float]]:
    records = [r for _, r in sorted(_metrics(out).items())]
    return [r["loss"] for r in records], [r["grad_norm"] for r in records]


def _assert_same_training(got: dict, ref: str) -> None:
    """Same losses, and the same gradient norms: under Adam with clipping a gradient off by a
    constant factor barely moves the losses, but it shows in the norm."""
    ref_losses, ref_norms = got[ref]
    assert all(n > 0 for n in ref_norms), ref_norms
    for name, (losses, norms) in got.items():
        assert losses == pytest.approx(ref_losses, abs=2e-5), name
        assert norms == pytest.approx(ref_norms, rel=1e-4), name


def test_parallel_layouts_give_the_same_losses(assets, tmp_path):
    """DP=1 x 2 micro-batches, DP=2 (gradient reduction overlapped with the backward, the
    default, and after it), TP=2 + sequence parallel, PP=2, both samples packed in one
    document-masked row: same samples, same losses and gradient norms."""
    layouts = {"dp1": (1, []), "dp1_fused_adam": (1, ["--fused_optimizer", "True"]), "dp2": (2, []),
               "dp2_no_overlap": (2, ["--overlap_grad_reduce", "False"]),
               "packed": (1, ["--max_tokens_per_micro_batch", "100000"]),
               "tp2sp": (2, ["--tensor_model_parallel_size", "2", "--sequence_parallel"]),
               "pp2": (2, ["--pipeline_model_parallel_size", "2"]),
               # Two micro-batches per rank: the overlapped reduction must skip the first one.
               "dp1_gb4": (1, ["--global_batch_size", "4"]), "dp2_gb4": (2, ["--global_batch_size", "4"])}
    got = {}
    for name, (nproc, extra) in layouts.items():
        out = tmp_path / name
        run_torchrun(TRAINER, nproc, *_finetune_args(assets, out, "--max_steps", "3", "--global_batch_size", "2",
                                                     *extra))
        got[name] = _losses_and_grad_norms(out)
    _assert_same_training({k: got.pop(k) for k in ("dp1_gb4", "dp2_gb4")}, "dp1_gb4")
    _assert_same_training(got, "dp1")
    assert len(set(round(x, 6) for x in got["dp1"][0])) > 1  # the encoder trains: losses move


def test_window_mode_layouts_give_the_same_losses(assets, tmp_path):
    """Packed window rows (the mask as a segment/prefix spec) at TP=2 + sequence parallel and at
    DP=2, and the per-window loop, give the packed DP=1 losses and gradient norms."""
    layouts = {"dp1": (1, []), "dp2": (2, []), "loop": (1, ["--window_impl", "loop"]),
               "tp2sp": (2, ["--tensor_model_parallel_size", "2", "--sequence_parallel"])}
    got = {}
    for name, (nproc, extra) in layouts.items():
        out = tmp_path / name
        run_torchrun(TRAINER, nproc, *_pretrain_args(assets, out, "--max_steps", "2", "--global_batch_size", "2",
                                                     "--save_strategy", "no", *extra))
        got[name] = _losses_and_grad_norms(out)
    _assert_same_training(got, "dp1")


def test_sigterm_saves_then_exits(assets, tmp_path):
    out = tmp_path / "sig"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=1", f"--master-port={free_port()}",
           "-m", TRAINER, *_pretrain_args(assets, out, "--max_steps", "1000", "--save_strategy", "no")]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    lines, deadline = [], time.time() + 240
    try:
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("step 2 |"):
                os.killpg(proc.pid, signal.SIGTERM)
                break
            assert time.time() < deadline, "".join(lines[-30:])
        rest, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    text = "".join(lines) + rest
    saved = [p for p in out.iterdir() if p.name.startswith("checkpoint-") and not p.name.endswith(".tmp")]
    assert len(saved) == 1 and (saved[0] / "compressive_encoder/model.safetensors").is_file(), text[-3000:]
    assert "SIGTERM: saved" in text


def test_nonfinite_losses_skip_updates_then_stop(assets, tmp_path):
    """A learning rate of 1e30 blows the encoder up after step 1: later losses are NaN, their
    updates are skipped, and three in a row stop the run with a clear message. Skipped steps
    still advance the learning-rate schedule, which stays a function of the step number."""
    out = tmp_path / "nan"
    with pytest.raises(AssertionError) as failed:
        run_torchrun(TRAINER, 1, *_finetune_args(assets, out, "--max_steps", "8", "--learning_rate", "1e30",
                                                 "--warmup_ratio", "0", "--max_nonfinite_steps", "3"))
    text = str(failed.value)
    assert "non-finite loss nan; update skipped (1 in a row)" in text
    assert "error: 3 consecutive non-finite steps" in text
    got = _metrics(out)
    assert sorted(got) == [1, 2, 3]  # step 1 trained, 2 and 3 logged as skipped, step 4 stopped the run
    # Linear decay to 0 over 8 steps: step k runs at 1e30 * (1 - (k - 1) / 8), skipped or not.
    assert [got[k]["lr"] for k in (1, 2, 3)] == pytest.approx([1e30, 1e30 * 7 / 8, 1e30 * 6 / 8])


def test_loss_goes_down_and_fractional_save_cadence(assets, tmp_path):
    out = tmp_path / "learn"
    run_torchrun(TRAINER, 1, *_pretrain_args(assets, out, "--max_steps", "12", "--learning_rate", "3e-3",
                                             "--save_strategy", "steps", "--save_steps", "0.249999"))
    # ceil(12 x 0.249999) = 3: saves at 3, 6, 9 and the final step.
    assert sorted((p.name for p in out.iterdir() if p.name.startswith("checkpoint-")),
                  key=lambda n: int(n.split("-")[1])) == ["checkpoint-3", "checkpoint-6", "checkpoint-9", "checkpoint-12"]
    losses = [r["loss"] for _, r in sorted(_metrics(out).items())]
    assert sum(losses[-3:]) / 3 < losses[0] - 0.03, losses


def test_seed_scripts_run_with_paths_and_sizes_changed(assets, tmp_path):
    """examples/llama2/pretrain.sh and finetune_multitask.sh, chained through checkpoint-*/compressive_encoder."""
    env = {"TORCHRUN": f"{sys.executable} -m torch.distributed.run", "GPUS_PER_NODE": "1",
           "MASTER_PORT": str(free_port()), "LM": assets["llama"], "DATA_DIR": assets["data"],
           "OUTPUT_ROOT": str(tmp_path / "runs"), "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    small = ["--encoder_num_hidden_layers", "2", "--max_steps", "2", "--logging_steps", "1"]

    def script(name, *extra):
        proc = subprocess.run(["bash", str(ROOT / "examples/llama2" / name), *small, *extra], cwd=ROOT,
                              env={**os.environ, **env}, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
        return proc.stdout

    script("pretrain.sh", "--window", "128", "--encoder_max_length", "512", "--min_length", "256")
    pretrain = tmp_path / "runs/pretrain/acerag-llama2-pretrain"
    # The multi-task stage chains from the LongAlpaca stage's latest checkpoint: stand in for it.
    shutil.copytree(pretrain / "checkpoint-2", tmp_path / "runs/ft/acerag-llama2-longalpaca/checkpoint-2")
    out = script("finetune_multitask.sh", "--lm_max_length", "256", "--encoder_max_length", "128",
                 "--min_length", "64", "--train_num_per_data", "16")
    assert "Using encoder path:" in out and "acerag-llama2-longalpaca/checkpoint-2/compressive_encoder" in out
    final = tmp_path / "runs/ft/acerag-llama2-multitask-ft/checkpoint-2/compressive_encoder"
    assert (final / "model.safetensors").is_file() and (final / "config.json").is_file()
