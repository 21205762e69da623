"""Exports read identically by transformers 4.57.x (AceRAG's pin) and the installed 5.x.

The encoder and LM folders the trainer / converter write, and the tiny model folders themselves,
are loaded with each version's Auto class in float32: the same hidden states / logits (<= 1e-5),
the RoPE base the rotary embedding actually computes with equal to the source model's (1e6 for
Qwen3, 1e4 for Llama-2), and the tokenizer next to the encoder giving the LM tokenizer's ids
(the trainer copies the LM's, whatever the encoder's source holds).

4.57 lives in a second environment (`make install` puts it in .venv/tf457, which `make test`
depends on; ACERAG_TF457 overrides the folder); these tests carry the `transformers457` marker.
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from acerag_megatron.weights.hf_config import both_versions
from tests.launch import ROOT, run_torchrun

TF457 = Path(os.environ.get("ACERAG_TF457", ROOT / ".venv" / "tf457"))
TOL = 1e-5
SOURCE_THETA = {"llama": 10000.0, "qwen3": 1000000.0}
TEXT = "Answer the question based on the given passages.\nQuestion: who wrote it?"


def _spec(assets, exported: Path, version_prefix: str) -> dict:
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 500, (2, 40), generator=gen)
    mask = torch.ones_like(ids)
    mask[1, :7] = 0  # AceRAG left-pads encoder and LM rows
    folders = {}
    for fam in ("llama", "qwen3"):
        folders[f"encoder_{fam}"] = {"path": str(exported / f"encoder_{fam}"), "auto": "AutoModel"}
        folders[f"lm_{fam}"] = {"path": str(exported / f"lm_{fam}"), "auto": "AutoModelForCausalLM"}
        folders[f"tiny_{fam}"] = {"path": assets[fam], "auto": "AutoModelForCausalLM"}
    return {"version_prefix": version_prefix, "input_ids": ids.tolist(), "attention_mask": mask.tolist(),
            "text": TEXT, "folders": folders}


def _read(spec: dict, workdir: Path, pythonpath: str) -> dict:
    spec_file, out_file = workdir / f"spec_{spec['version_prefix']}json", workdir / f"out_{spec['version_prefix']}pt"
    spec_file.write_text(json.dumps(spec))
    env = {**os.environ, "PYTHONPATH": pythonpath, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "tests.workers.hf_outputs", str(spec_file), str(out_file)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return torch.load(out_file, weights_only=True)


@pytest.fixture(scope="module")
def readings(assets, tmp_path_factory):
    if not (TF457 / "transformers").is_dir():
        pytest.fail(f"{TF457}: no transformers 4.57 environment; run `make install` (or set ACERAG_TF457)")
    work = tmp_path_factory.mktemp("export_compat")
    exported = work / "exported"
    run_torchrun("tests.workers.export_compat", 1, str(exported), assets["llama"], assets["qwen3"],
                 env={"HF_HUB_OFFLINE": "1"}, timeout=300)
    new_spec = _spec(assets, exported, "5.")
    new = _read(new_spec, work, str(ROOT))
    old = _read(_spec(assets, exported, "4.57."), work, f"{TF457}{os.pathsep}{ROOT}")
    return {"new": new, "old": old, "valid": torch.tensor(new_spec["attention_mask"]).bool()}


NAMES = [f"{kind}_{fam}" for fam in ("llama", "qwen3") for kind in ("encoder", "lm", "tiny")]


@pytest.mark.transformers457
@pytest.mark.parametrize("name", NAMES)
def test_same_outputs_and_rope_base(readings, name):
    new, old = readings["new"][name], readings["old"][name]
    theta = SOURCE_THETA[name.rsplit("_", 1)[1]]
    for version, got in (("5.x", new), ("4.57", old)):
        assert got["rope_base"] == pytest.approx(theta, rel=1e-6), f"{name}: transformers {version} RoPE base"
        assert got["rope_base_config"] == theta, f"{name}: transformers {version} config's rope_theta"
    diff = (new["output"] - old["output"])[readings["valid"]].abs().max().item()
    assert diff <= TOL, f"{name}: 4.57 vs 5.x max abs diff {diff:.3e}"


@pytest.mark.transformers457
@pytest.mark.parametrize("fam", ["llama", "qwen3"])
def test_encoder_folder_carries_the_lm_tokenizer(readings, fam):
    lm_tokens = readings["new"][f"tiny_{fam}"]["tokens"]
    for version in ("new", "old"):
        assert readings[version][f"encoder_{fam}"]["tokens"] == lm_tokens, f"{fam}: {readings[version]['version']}"


def test_config_carries_both_rope_spellings():
    new_style = {"model_type": "qwen3", "rope_parameters": {"rope_type": "default", "rope_theta": 1e6},
                 "dtype": "bfloat16", "_name_or_path": "somewhere"}
    out = both_versions(new_style)
    assert (out["rope_theta"], out["rope_scaling"], out["torch_dtype"]) == (1e6, None, "bfloat16")
    assert "_name_or_path" not in out
    legacy = {"model_type": "llama", "rope_theta": 5e5, "torch_dtype": "float16",
              "rope_scaling": {"type": "linear", "factor": 2.0}}
    out = both_versions(legacy)
    assert out["rope_parameters"] == {"rope_type": "linear", "factor": 2.0, "rope_theta": 5e5}
    assert out["rope_scaling"] == {"rope_type": "linear", "factor": 2.0}
    assert (out["rope_theta"], out["dtype"]) == (5e5, "float16")
    with pytest.raises(ValueError, match="nested per layer type"):
        both_versions({"rope_parameters": {"full_attention": {"rope_type": "default", "rope_theta": 1e4}}})


def test_trainer_export_carries_the_lm_tokenizer(assets, tmp_path):
    """An encoder source without a tokenizer (config + weights only, as AceRAG saves encoders)
    still gives a checkpoint encoder folder with the LM's tokenizer files."""
    lm, source = Path(assets["qwen3"]), tmp_path / "encoder_source"
    source.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copyfile(lm / name, source / name)
    out = tmp_path / "run"
    run_torchrun("acerag_megatron.train_compressive_encoder", 1,
                 "--language_model_name_or_path", str(lm), "--encoder_name_or_path", str(source),
                 "--window_mode", "True", "--min_length", "256", "--max_length", "4000",
                 "--encoder_num_hidden_layers", "1", "--window", "128", "--encoder_max_length", "512",
                 "--comp_candidates", "2", "--data_files", assets["files"]["redpajama"], "--output_dir", str(out),
                 "--max_steps", "1", "--global_batch_size", "1", env={"HF_HUB_OFFLINE": "1"}, timeout=300)
    exported = out / "checkpoint-1" / "compressive_encoder"
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        assert (exported / name).read_bytes() == (lm / name).read_bytes(), name
