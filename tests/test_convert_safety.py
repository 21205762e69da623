"""Converters are exact by default and never destructive.

HF -> Megatron -> HF with no flags gives back every tensor bit for bit in its dtype (fp32, bf16,
fp16 sources); --output never replaces an input, and replaces a non-empty folder only when this
command wrote it or --overwrite is given; a trainer checkpoint converts and verifies like a
hf_to_megatron one. The command lines run for real (a process per command, or one process for a
list of conversions, which pays the imports once).
"""
import hashlib
import json

import pytest
import torch
from safetensors.torch import load_file

from tests.cli_errors import assert_one_error, run, run_in_one_process


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from acerag_megatron.tiny.models import make_tiny_hf_model

    root = tmp_path_factory.mktemp("safety")
    return {"float32": make_tiny_hf_model("llama", root / "llama_fp32", 97, num_layers=2, seed=1),
            "bfloat16": make_tiny_hf_model("qwen3", root / "qwen3_bf16", 97, num_layers=2, seed=2,
                                           dtype=torch.bfloat16),
            "float16": make_tiny_hf_model("llama", root / "llama_fp16", 97, num_layers=2, seed=3,
                                          dtype=torch.float16)}


def convert(*calls) -> list[dict]:
    """Run (command, args) conversions in one process; their results in order."""
    return run_in_one_process(*((f"checkpoints_convert.{cli}", args) for cli, args in calls))


def tree_digest(folder) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_same_tensors(expected: dict, got: dict):
    assert expected.keys() == got.keys()
    for name, tensor in expected.items():
        assert got[name].dtype == tensor.dtype, name
        assert torch.equal(got[name], tensor), name


@pytest.fixture(scope="module")
def converted(models, tmp_path_factory):
    """Every conversion of this file in one process, in order: name -> result; plus the folders."""
    out = tmp_path_factory.mktemp("converted")
    fp32, qwen, fp16 = models["float32"], models["bfloat16"], models["float16"]
    foreign = out / "notes"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    inputs_before = tree_digest(fp32.parent)
    calls = {}
    for dtype, hf in models.items():
        calls[f"h2m_{dtype}"] = ("hf_to_megatron", ["--hf-path", hf, "--output", out / f"m_{dtype}"])
        calls[f"m2h_{dtype}"] = ("megatron_to_hf", ["--megatron-path", out / f"m_{dtype}",
                                                    "--output", out / f"h_{dtype}", "--hf-config-from", hf])
    calls.update({
        "h2m_encoder": ("hf_to_megatron", ["--hf-path", qwen, "--output", out / "enc", "--role", "encoder",
                                           "--num-layers", "1"]),
        "m2h_encoder": ("megatron_to_hf", ["--megatron-path", out / "enc", "--output", out / "enc_hf",
                                           "--hf-config-from", qwen]),
        # Earlier outputs of the same command are replaced without --overwrite.
        "h2m_first": ("hf_to_megatron", ["--hf-path", qwen, "--output", out / "rw_m"]),
        "m2h_first": ("megatron_to_hf", ["--megatron-path", out / "rw_m", "--output", out / "rw_h",
                                         "--hf-config-from", qwen]),
        "h2m_again": ("hf_to_megatron", ["--hf-path", fp16, "--output", out / "rw_m"]),
        "m2h_again": ("megatron_to_hf", ["--megatron-path", out / "rw_m", "--output", out / "rw_h",
                                         "--hf-config-from", fp16]),
        # Inputs are never replaced, --overwrite or not.
        "h2m_onto_input": ("hf_to_megatron", ["--hf-path", fp32, "--output", fp32]),
        "h2m_onto_parent": ("hf_to_megatron", ["--hf-path", fp32, "--output", fp32.parent, "--overwrite"]),
        "m2h_onto_checkpoint": ("megatron_to_hf", ["--megatron-path", out / "m_float32", "--output",
                                                   out / "m_float32", "--hf-config-from", fp32]),
        "m2h_onto_config": ("megatron_to_hf", ["--megatron-path", out / "m_float32", "--output", fp32,
                                               "--hf-config-from", fp32, "--overwrite"]),
        "h2m_onto_own_input": ("hf_to_megatron", ["--hf-path", out / "h_float32", "--output", out / "h_float32"]),
        # Other non-empty folders only with --overwrite; another model folder is not ours either.
        "h2m_foreign": ("hf_to_megatron", ["--hf-path", fp16, "--output", foreign]),
        "m2h_foreign": ("megatron_to_hf", ["--megatron-path", out / "m_float16", "--output", foreign,
                                           "--hf-config-from", fp16]),
        "m2h_other_model": ("megatron_to_hf", ["--megatron-path", out / "m_float16", "--output", qwen,
                                               "--hf-config-from", fp16]),
        "h2m_foreign_overwrite": ("hf_to_megatron", ["--hf-path", fp16, "--output", foreign, "--overwrite"]),
    })
    results = convert(*calls.values())
    return dict(zip(calls, results)), out, inputs_before


def test_default_round_trips_are_bit_exact(models, converted):
    results, out, _ = converted
    for name in ("h2m_float32", "m2h_float32", "h2m_bfloat16", "m2h_bfloat16", "h2m_float16", "m2h_float16",
                 "h2m_encoder", "m2h_encoder"):
        assert results[name]["code"] == 0, results[name]
    for dtype in models:
        assert_same_tensors(load_file(models[dtype] / "model.safetensors"),
                            load_file(out / f"h_{dtype}" / "model.safetensors"))
        assert json.loads((out / f"h_{dtype}" / "config.json").read_text())["dtype"] == dtype
    source = load_file(models["bfloat16"] / "model.safetensors")
    layer0 = {k[len("model."):]: v for k, v in source.items()
              if k.startswith(("model.embed_tokens.", "model.norm.", "model.layers.0."))}
    assert_same_tensors(layer0, load_file(out / "enc_hf" / "model.safetensors"))


def test_earlier_outputs_are_replaced_without_a_flag(models, converted):
    results, out, _ = converted
    # Both outputs existed (from the Qwen3 model) when they were rewritten from the fp16 Llama.
    assert [results[n]["code"] for n in ("h2m_first", "m2h_first", "h2m_again", "m2h_again")] == [0] * 4
    assert_same_tensors(load_file(models["float16"] / "model.safetensors"),
                        load_file(out / "rw_h" / "model.safetensors"))


def test_output_never_replaces_an_input(models, converted):
    results, out, inputs_before = converted
    for name, flag in (("h2m_onto_input", "--hf-path"), ("h2m_onto_parent", "--hf-path"),
                       ("m2h_onto_checkpoint", "--megatron-path"), ("m2h_onto_config", "--hf-config-from"),
                       ("h2m_onto_own_input", "--hf-path")):
        assert results[name]["code"] == 1 and f"would replace the input {flag}" in results[name]["message"], name
        assert results[name]["message"].startswith("error: --output ")
    assert tree_digest(models["float32"].parent) == inputs_before
    assert_same_tensors(load_file(models["float32"] / "model.safetensors"),
                        load_file(out / "h_float32" / "model.safetensors"))


def test_foreign_output_needs_overwrite(converted):
    results, out, _ = converted
    for name, tool in (("h2m_foreign", "hf_to_megatron"), ("m2h_foreign", "megatron_to_hf"),
                       ("m2h_other_model", "megatron_to_hf")):
        assert results[name]["code"] == 1, name
        assert f"not written by {tool}; pass --overwrite" in results[name]["message"], name
    assert results["h2m_foreign_overwrite"]["code"] == 0
    assert not (out / "notes" / "keep.txt").exists() and (out / "notes" / "acerag_info.json").is_file()


def _train_one_step(assets, out):
    rc, text = run(["-m", "acerag_megatron.train_compressive_encoder"], "--language_model_name_or_path",
                   assets["llama"], "--window_mode", "false", "--lm_max_length", "256",
                   "--encoder_num_hidden_layers", "2", "--encoder_max_length", "128", "--comp_candidates", "2",
                   "--data_files", assets["files"]["longalpaca"], "--min_length", "64", "--max_length", "32000",
                   "--output_dir", str(out), "--max_steps", "1", "--logging_steps", "1", timeout=400)
    assert rc == 0, text[-5000:]
    return out / "checkpoint-1"


def test_trainer_checkpoint_converts_and_verifies(assets, tmp_path):
    checkpoint = _train_one_step(assets, tmp_path / "run")
    auto, fp32 = tmp_path / "auto", tmp_path / "fp32"
    results = convert(
        ("megatron_to_hf", ["--megatron-path", checkpoint / "megatron", "--output", auto,
                            "--hf-config-from", assets["llama"]]),
        ("megatron_to_hf", ["--megatron-path", checkpoint, "--output", fp32, "--hf-config-from", assets["llama"],
                            "--dtype", "float32"]),
        ("verify", ["--hf-path", fp32, "--megatron-path", checkpoint, "--tolerance", "1e-5"]),
    )
    assert [r["code"] for r in results] == [0, 0, 0]
    # auto = the dtype of the trainer's own export beside the checkpoint (bf16): the same tensors.
    trainer_export = load_file(checkpoint / "compressive_encoder" / "model.safetensors")
    assert_same_tensors(trainer_export, load_file(auto / "model.safetensors"))
    # The CPU run trained float32 parameters, which --dtype float32 writes as they are.
    got = load_file(fp32 / "model.safetensors")
    assert {t.dtype for t in got.values()} == {torch.float32}
    assert_same_tensors(trainer_export, {k: v.to(torch.bfloat16) for k, v in got.items()})

    mismatch = run(["-m", "checkpoints_convert.megatron_to_hf"], "--megatron-path", str(checkpoint / "megatron"),
                   "--output", str(tmp_path / "q"), "--hf-config-from", assets["qwen3"])
    assert_one_error(mismatch, "--hf-config-from", "qwen3", "llama", "--megatron-path")
