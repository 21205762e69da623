"""Sharded HF exports use huggingface_hub's shard plan and names (model-0000k-of-0000N.safetensors
plus model.safetensors.index.json) and load with transformers to the source weights."""
import json
from pathlib import Path

import pytest
import torch
from huggingface_hub import split_torch_state_dict_into_shards
from safetensors.torch import load_file
from transformers import AutoModel, AutoModelForCausalLM

from acerag_megatron.weights.export import shard_file_name, shard_plan

from tests.launch import run_torchrun

MAX_SHARD = 40_000  # below the tiny models' embedding table (its own file) and above most layer tensors


@pytest.fixture(scope="module")
def exported(assets, tmp_path_factory):
    out = tmp_path_factory.mktemp("export_shards")
    run_torchrun("tests.workers.export_shards", 2, str(out), assets["llama"], str(MAX_SHARD),
                 env={"HF_HUB_OFFLINE": "1"}, timeout=300)
    return out


def _files_in_order(folder: Path) -> tuple[list[str], dict]:
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    files = sorted(p.name for p in folder.glob("*.safetensors"))
    n = len(files)
    assert n > 2
    assert files == [f"model-{k:05d}-of-{n:05d}.safetensors" for k in range(1, n + 1)]
    assert set(index["weight_map"].values()) == set(files)
    return files, index


def _tensors(folder: Path, files: list[str]) -> dict[str, torch.Tensor]:
    out = {}
    for name in files:
        part = load_file(folder / name)
        assert not set(part) & set(out), f"{name}: a tensor stored twice"
        out.update(part)
    return out


def test_encoder_shards_are_huggingface_hub_plan(exported, assets):
    folder = exported / "encoder"
    files, index = _files_in_order(folder)
    tensors = _tensors(folder, files)
    assert index["weight_map"] == {k: f for f in files for k in load_file(folder / f)}
    assert index["metadata"] == {"total_size": sum(t.numel() * t.element_size() for t in tensors.values()),
                                 "total_parameters": sum(t.numel() for t in tensors.values())}
    # huggingface_hub's rule: a file stays under the limit unless it holds one bigger tensor alone.
    for name in files:
        part = load_file(folder / name)
        size = sum(t.numel() * t.element_size() for t in part.values())
        assert size <= MAX_SHARD or len(part) == 1, name
    assert len(load_file(folder / index["weight_map"]["embed_tokens.weight"])) == 1
    source = load_file(Path(assets["llama"]) / "model.safetensors")
    loaded = AutoModel.from_pretrained(folder, dtype=torch.float32).state_dict()
    assert set(loaded) == set(tensors)
    for name, value in loaded.items():
        assert torch.equal(value, source[f"model.{name}"]), name


def test_lm_shards_numbered_across_pipeline_stages(exported, assets):
    folder = exported / "lm"
    files, index = _files_in_order(folder)
    tensors = _tensors(folder, files)
    source = load_file(Path(assets["llama"]) / "model.safetensors")
    assert set(tensors) == set(source)
    assert all(torch.equal(tensors[k], source[k]) for k in source)
    # Stage 0 (embedding, first layers) numbers its files before stage 1 (last layers, final norm, head).
    assert index["weight_map"]["model.embed_tokens.weight"] < index["weight_map"]["lm_head.weight"]
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    assert all(torch.equal(v, source[k]) for k, v in model.state_dict().items())


def test_shard_plan_is_huggingface_hub_split():
    gen = torch.Generator().manual_seed(0)
    sizes = [300, 5000, 2000, 2000, 9000, 100, 2500, 2500, 40, 7000]
    tensors = {f"t{i}": torch.randn(n, generator=gen) for i, n in enumerate(sizes)}
    split = split_torch_state_dict_into_shards(tensors, max_shard_size=16_000)
    plan = shard_plan(tensors, 16_000)
    assert {shard_file_name(k, len(plan)): names for k, names in enumerate(plan)} == split.filename_to_tensors
    assert shard_plan(tensors, "1GB") == [list(tensors)] and shard_file_name(0, 1) == "model.safetensors"
    # Views into one buffer (Megatron's contiguous parameter buffer) are separate weights, each sized
    # by itself; the torch variant would keep them together as tied and size them by the buffer.
    buffer = torch.zeros(3000)
    views = {"a": buffer[:1000], "b": buffer[1000:2000], "c": buffer[2000:]}
    assert shard_plan(views, 8000) == [["a", "b"], ["c"]]
