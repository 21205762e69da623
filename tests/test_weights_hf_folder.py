"""HF folder reading (safetensors / .bin, single / sharded, lazy slices) and the layout table
(HF -> per-rank Megatron shards -> HF is the identity at every TP size)."""
import json

import pytest
import torch
from safetensors.torch import save_file

from acerag_megatron.models.arch import ModelArch
from acerag_megatron.weights.hf_folder import HFCheckpoint, find_prefix
from acerag_megatron.weights.mapping import RULES, canonical_name, hf_names, hf_to_megatron_shard, match, megatron_shards_to_hf

CONFIG = {"model_type": "qwen3", "vocab_size": 37, "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 4,
          "num_key_value_heads": 2, "head_dim": 8, "intermediate_size": 24, "rms_norm_eps": 1e-6,
          "rope_parameters": {"rope_type": "default", "rope_theta": 1e6}, "max_position_embeddings": 64}


def random_hf_tensors(arch: ModelArch, prefix: str = "model.") -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    h, hd = arch.hidden_size, arch.head_dim
    shapes = {"embed_tokens.weight": (arch.vocab_size, h), "norm.weight": (h,),
              "layers.0.input_layernorm.weight": (h,), "layers.0.post_attention_layernorm.weight": (h,),
              "layers.0.self_attn.q_proj.weight": (arch.num_attention_heads * hd, h),
              "layers.0.self_attn.k_proj.weight": (arch.num_kv_heads * hd, h),
              "layers.0.self_attn.v_proj.weight": (arch.num_kv_heads * hd, h),
              "layers.0.self_attn.o_proj.weight": (h, arch.num_attention_heads * hd),
              "layers.0.self_attn.q_norm.weight": (hd,), "layers.0.self_attn.k_norm.weight": (hd,),
              "layers.0.mlp.gate_proj.weight": (arch.ffn_hidden_size, h),
              "layers.0.mlp.up_proj.weight": (arch.ffn_hidden_size, h),
              "layers.0.mlp.down_proj.weight": (h, arch.ffn_hidden_size)}
    out = {prefix + k: torch.randn(s, generator=g) for k, s in shapes.items()}
    out["lm_head.weight"] = torch.randn(arch.vocab_size, h, generator=g)
    return out


def reader(tensors):
    """In-memory stand-in for HFCheckpoint.get."""
    def read(name, rows=None, cols=None):
        t = tensors[name][rows or slice(None)]
        return t[:, cols or slice(None)] if t.dim() == 2 else t
    return read


@pytest.fixture
def arch():
    return ModelArch.from_config_dict(CONFIG)


def write_folder(path, tensors, sharded=False, fmt="safetensors"):
    path.mkdir()
    (path / "config.json").write_text(json.dumps(CONFIG))
    if fmt == "bin":
        torch.save(tensors, path / "pytorch_model.bin")
        return path
    if not sharded:
        save_file(tensors, str(path / "model.safetensors"))
        return path
    names = sorted(tensors)
    halves = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    weight_map = {}
    for file, part in halves.items():
        save_file({n: tensors[n] for n in part}, str(path / file))
        weight_map.update({n: file for n in part})
    (path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return path


@pytest.mark.parametrize("layout", [("safetensors", False), ("safetensors", True), ("bin", False)])
def test_reads_every_layout_with_slices(tmp_path, arch, layout):
    tensors = random_hf_tensors(arch)
    ckpt = HFCheckpoint(str(write_folder(tmp_path / "m", tensors, sharded=layout[1], fmt=layout[0])))
    assert sorted(ckpt.keys()) == sorted(tensors)
    assert find_prefix(ckpt) == "model."
    q = "model.layers.0.self_attn.q_proj.weight"
    assert torch.equal(ckpt.get(q), tensors[q])
    assert torch.equal(ckpt.get(q, rows=slice(8, 16)), tensors[q][8:16])
    assert torch.equal(ckpt.get(q, cols=slice(3, 5)), tensors[q][:, 3:5])
    assert ckpt.shape(q) == tuple(tensors[q].shape)
    with pytest.raises(KeyError, match="not found"):
        ckpt.get("model.missing.weight")


def test_missing_weights_and_bad_config_are_named(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="empty"):
        HFCheckpoint(str(tmp_path / "empty"))
    with pytest.raises(ValueError, match="model_type"):
        ModelArch.from_config_dict({**CONFIG, "model_type": "gpt2"}, source="x")
    with pytest.raises(ValueError, match="use_sliding_window"):
        ModelArch.from_config_dict({**CONFIG, "use_sliding_window": True})
    with pytest.raises(ValueError, match="hidden_act"):
        ModelArch.from_config_dict({**CONFIG, "hidden_act": "gelu"})
    with pytest.raises(ValueError, match="rope_type"):
        ModelArch.from_config_dict({**CONFIG, "rope_parameters": {"rope_type": "yarn", "rope_theta": 1.0}})


@pytest.mark.parametrize("tp", [1, 2])
def test_layout_round_trip_every_rule(arch, tp):
    tensors = random_hf_tensors(arch)
    padded_vocab = -(-arch.vocab_size // tp) * tp
    for rule in RULES:
        names = hf_names(rule, 0, "model.")
        shards = [hf_to_megatron_shard(rule, names, reader(tensors), arch, tp, r, padded_vocab) for r in range(tp)]
        back = megatron_shards_to_hf(rule, names, shards, arch)
        assert set(back) == set(names)
        for name in names:
            assert torch.equal(back[name], tensors[name]), (rule.megatron, name)


def test_qkv_shard_holds_whole_query_groups(arch):
    tensors = random_hf_tensors(arch)
    rule = next(r for r in RULES if r.kind == "qkv")
    names = hf_names(rule, 0, "model.")
    shard = hf_to_megatron_shard(rule, names, reader(tensors), arch, 2, 1)
    hd, hpg = arch.head_dim, arch.num_attention_heads // arch.num_kv_heads
    q, k, v = (tensors[n] for n in names)
    expected = torch.cat([q[hpg * hd:2 * hpg * hd], k[hd:2 * hd], v[hd:2 * hd]])
    assert torch.equal(shard, expected)


def test_names_resolve_for_local_and_te_specs():
    rule, layer = match("decoder.layers.3.self_attention.linear_qkv.layer_norm_weight")
    assert rule.megatron.endswith("input_layernorm.weight") and layer == 3
    assert canonical_name("decoder.layers.0.mlp.linear_fc1.layer_norm_weight") == "decoder.layers.0.pre_mlp_layernorm.weight"
    assert match("decoder.layers.0.unknown.weight") is None
    assert hf_names(match("output_layer.weight")[0], None, "model.") == ["lm_head.weight"]
