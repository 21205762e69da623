"""The seed's six launch scripts, unchanged, with hub ids (`org/name`) for the LM and the
initial encoder from an offline HF cache made here (HF_HOME, HF_HUB_OFFLINE=1), raw JSON in,
chained through checkpoint-*/compressive_encoder, exported encoders out; then the converters
and tools/evaluate.py on the same ids. Only tiny sizes are appended to the scripts' flags."""
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from acerag_megatron.tiny.__main__ import HUB_IDS
from tests.launch import ROOT, free_port, run_torchrun

FAMILIES = {"llama2": "llama", "qwen3": "qwen3"}
SMALL = ["--encoder_num_hidden_layers", "2", "--max_steps", "1", "--logging_steps", "1"]
SMALL_PT = [*SMALL, "--window", "128", "--encoder_max_length", "512", "--min_length", "256"]
SMALL_FT = [*SMALL, "--lm_max_length", "256", "--encoder_max_length", "128", "--min_length", "64"]


@pytest.fixture(scope="module")
def hub(assets, tmp_path_factory):
    """An HF cache holding the tiny models under HUB_IDS, and the environment that reads it offline."""
    from acerag_megatron.tiny.hub_cache import put_in_hf_cache

    hf_home = tmp_path_factory.mktemp("hf_home")
    for family in FAMILIES.values():
        put_in_hf_cache(assets[family], HUB_IDS[family], hf_home)
    env = {"HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1",
           "TORCHRUN": f"{sys.executable} -m torch.distributed.run"}
    return env


def _script(env: dict, path: str, *extra: str, gpus: int = 1) -> str:
    run_env = {**os.environ, **env, "GPUS_PER_NODE": str(gpus), "MASTER_PORT": str(free_port())}
    start = time.time()
    proc = subprocess.run(["bash", str(ROOT / "examples" / path), *extra], cwd=ROOT, env=run_env,
                          capture_output=True, text=True, timeout=300)
    print(f"{path}: {time.time() - start:.0f} s")
    assert proc.returncode == 0, f"{path}:\n{(proc.stdout + proc.stderr)[-5000:]}"
    return proc.stdout + proc.stderr


def _latest(run_dir: Path) -> Path:
    steps = sorted(run_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    assert steps, f"{run_dir}: no checkpoint"
    return steps[-1]


@pytest.fixture(scope="module")
def trained(hub, assets, tmp_path_factory):
    """Per family: pretrain -> LongAlpaca -> multi-task, each script as a user runs it."""
    runs = {}
    for family, asset in FAMILIES.items():
        root = tmp_path_factory.mktemp(f"runs_{family}")
        env = {**hub, "LM": HUB_IDS[asset], "DATA_DIR": assets["data"], "OUTPUT_ROOT": str(root)}
        # One 2-rank run (data parallel): both local ranks read the hub id, rank 0 fetches first.
        out = {"pretrain": _script(env, f"{family}/pretrain.sh", *SMALL_PT, gpus=2 if family == "llama2" else 1)}
        out["longalpaca"] = _script(env, f"{family}/finetune_longalpaca.sh", *SMALL_FT)
        out["multitask"] = _script(env, f"{family}/finetune_multitask.sh", *SMALL_FT, "--train_num_per_data", "16")
        runs[family] = {"root": root, "out": out, "env": env}
    return runs


@pytest.mark.parametrize("family", list(FAMILIES))
def test_six_launch_scripts_with_hub_ids(trained, family):
    from transformers import AutoModel

    run = trained[family]
    root, out = run["root"], run["out"]
    lm = run["env"]["LM"]
    assert f"LM (frozen)    {lm}" in out["pretrain"] and f"encoder        {lm}" in out["pretrain"]
    if family == "llama2":
        assert "world 2 = TP 1 x PP 1 x DP 2" in out["pretrain"]
    pretrain = _latest(root / f"pretrain/acerag-{family}-pretrain")
    longalpaca = _latest(root / f"ft/acerag-{family}-longalpaca")
    assert f"Using encoder path: {pretrain}/compressive_encoder" in out["longalpaca"]
    assert f"Using encoder path: {longalpaca}/compressive_encoder" in out["multitask"]
    final = _latest(root / f"ft/acerag-{family}-multitask-ft") / "compressive_encoder"
    encoder = AutoModel.from_pretrained(final)
    assert encoder.config.num_hidden_layers == 2
    assert type(encoder).__name__ == {"llama2": "LlamaModel", "qwen3": "Qwen3Model"}[family]
    # Raw JSON in: preprocessed with the hub id's tokenizer at data setup, counted per file.
    assert re.search(r"redpajama: records \d+", out["pretrain"]) and re.search(r"arc_easy: records \d+", out["multitask"])
    config = json.loads((final / "config.json").read_text())
    assert run["env"]["HF_HOME"] not in json.dumps(config)  # no cache path leaks into the export


def test_converters_with_hub_ids(trained, tmp_path):
    env = trained["llama2"]["env"]
    lm = env["LM"]
    mcore, back = tmp_path / "lm_mcore", tmp_path / "lm_hf"
    run_torchrun("checkpoints_convert.hf_to_megatron", 1, "--hf-path", lm, "--output", str(mcore), env=env,
                 timeout=180)
    assert "OK" in run_torchrun("checkpoints_convert.verify", 1, "--hf-path", lm, "--megatron-path", str(mcore),
                                env=env, timeout=180)
    run_torchrun("checkpoints_convert.megatron_to_hf", 1, "--megatron-path", str(mcore), "--output", str(back),
                 "--hf-config-from", lm, env=env, timeout=180)
    cached = Path(env["HF_HOME"], "hub", "models--" + lm.replace("/", "--"))
    source = load_file(next(cached.glob("snapshots/*/model.safetensors")))
    result = load_file(back / "model.safetensors")
    assert source.keys() == result.keys() and all(torch.equal(source[k], result[k]) for k in source)

    # The trainer's final encoder checkpoint, exported again with the config from the hub id.
    ckpt = _latest(trained["llama2"]["root"] / "ft/acerag-llama2-multitask-ft")
    encoder = tmp_path / "encoder_hf"
    run_torchrun("checkpoints_convert.megatron_to_hf", 1, "--megatron-path", str(ckpt), "--output", str(encoder),
                 "--hf-config-from", lm, env=env, timeout=180)
    exported = load_file(ckpt / "compressive_encoder/model.safetensors")
    again = load_file(encoder / "model.safetensors")
    assert exported.keys() == again.keys()
    assert all(torch.equal(exported[k].float(), again[k].float()) for k in exported)


def test_evaluate_with_hub_id(trained, tmp_path):
    from acerag_megatron.tiny.corpus import make_records

    env = trained["qwen3"]["env"]
    data = tmp_path / "eval_nq.json"
    data.write_text(json.dumps(make_records("nq", 4, seed=7, words=60)))
    encoder = _latest(trained["qwen3"]["root"] / "ft/acerag-qwen3-multitask-ft") / "compressive_encoder"
    out = tmp_path / "preds.jsonl"
    proc = subprocess.run([sys.executable, "tools/evaluate.py", "--lm", env["LM"], "--encoder", str(encoder),
                           "--data", str(data), "--dataset", "nq", "--comp_ratio", "4", "--max_new_tokens", "4",
                           "--batch_size", "4", "--lm_max_length", "256", "--encoder_max_length", "128",
                           "--output", str(out), "--no_progress"],
                          cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert len(out.read_text().splitlines()) == 4
