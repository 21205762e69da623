"""The checkpoints_convert commands end to end: HF -> Megatron (TP=2) -> verify (PP=2) -> HF,
bit-exact in float32, and verify failing (exit 1) against an HF folder with gate/up swapped."""
import subprocess
import sys

import pytest
from safetensors.torch import load_file, save_file

from tests.launch import ROOT, run_torchrun


@pytest.fixture(scope="module")
def hf_model(tmp_path_factory):
    from acerag_megatron.tiny.models import make_tiny_hf_model

    return make_tiny_hf_model("llama", tmp_path_factory.mktemp("cli") / "hf", 97, num_layers=4, seed=4)


def test_help_runs_without_torchrun():
    for cli in ("hf_to_megatron", "megatron_to_hf", "verify"):
        for how in (["-m", f"checkpoints_convert.{cli}"], [f"checkpoints_convert/{cli}.py"]):
            out = subprocess.run([sys.executable, *how, "--help"], cwd=ROOT,
                                 capture_output=True, text=True, check=True).stdout
            assert "torchrun" in out


def test_round_trip_and_verify(hf_model, tmp_path):
    env = {"HF_HUB_OFFLINE": "1"}
    ckpt, back = tmp_path / "mcore", tmp_path / "back"
    run_torchrun("checkpoints_convert.hf_to_megatron", 2, "--hf-path", str(hf_model), "--output", str(ckpt),
                 "--tp", "2", env=env, timeout=180)
    out = run_torchrun("checkpoints_convert.verify", 2, "--hf-path", str(hf_model), "--megatron-path", str(ckpt),
                       "--pp", "2", env=env, timeout=180)
    assert "OK" in out
    run_torchrun("checkpoints_convert.megatron_to_hf", 1, "--megatron-path", str(ckpt), "--output", str(back),
                 "--hf-config-from", str(hf_model), "--dtype", "float32", env=env, timeout=180)
    source, result = load_file(hf_model / "model.safetensors"), load_file(back / "model.safetensors")
    assert source.keys() == result.keys()
    assert all((source[k] == result[k]).all() for k in source)

    bad = tmp_path / "bad_hf"
    bad.mkdir()
    (bad / "config.json").write_text((hf_model / "config.json").read_text())
    swapped = dict(source)
    for i in range(4):
        gate, up = f"model.layers.{i}.mlp.gate_proj.weight", f"model.layers.{i}.mlp.up_proj.weight"
        swapped[gate], swapped[up] = source[up], source[gate]
    save_file(swapped, str(bad / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(AssertionError, match="FAILED"):
        run_torchrun("checkpoints_convert.verify", 1, "--hf-path", str(bad), "--megatron-path", str(ckpt),
                     env=env, timeout=180)
