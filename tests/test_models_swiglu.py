"""The lean SwiGLU: same values and gradients as autograd through silu(a) * b, less saved memory."""
import torch
import torch.nn.functional as F

from acerag_megatron.models.swiglu import swiglu


def _saved_bytes(fn, x):
    sizes = []

    def pack(t):
        sizes.append(t.untyped_storage().nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = fn(x)
    return y, sum(sizes)


def _reference(x):
    a, b = torch.chunk(x, 2, dim=-1)
    return F.silu(a) * b


def test_values_and_gradients_match_autograd():
    torch.manual_seed(0)
    x = (3 * torch.randn(7, 3, 64, dtype=torch.float64)).requires_grad_()
    g = torch.randn(7, 3, 32, dtype=torch.float64)
    ours = swiglu(x)
    (grad_ours,) = torch.autograd.grad(ours, x, g)
    ref = _reference(x)
    (grad_ref,) = torch.autograd.grad(ref, x, g)
    assert torch.equal(ours, ref)
    assert torch.allclose(grad_ours, grad_ref, rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(swiglu, (x[:2, :1, :8].detach().clone().requires_grad_(),))


def test_saves_only_its_input():
    x = torch.randn(128, 2, 256, requires_grad=True)
    _, ours = _saved_bytes(swiglu, x)
    _, ref = _saved_bytes(_reference, x)
    assert ours == x.untyped_storage().nbytes()
    assert ref >= 1.5 * ours


def test_fc1_recompute_rides_on_the_layer_spec_not_on_megatrons_config():
    import dataclasses

    from megatron.core.transformer.transformer_config import TransformerConfig

    from acerag_megatron.device import DeviceInfo
    from acerag_megatron.models.arch import ModelArch
    from acerag_megatron.models.layer_spec import block_spec, layer_spec
    from acerag_megatron.models.megatron_config import recompute_fc1, transformer_config

    arch = ModelArch.from_config_dict(dict(
        model_type="llama", vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-6, rope_theta=1e4,
        tie_word_embeddings=False, max_position_embeddings=128), source="fc1-spec")
    device = DeviceInfo(device="cpu", dist_backend="gloo", use_te=False, attention_backend="sdpa",
                        megatron_core="0.16.1")
    config = transformer_config(arch, num_layers=2, tp=1, pp=1, sequence_parallel=False,
                                params_dtype=torch.float32, device=device, recompute="core_attn,fc1")
    assert "recompute_fc1" not in {f.name for f in dataclasses.fields(TransformerConfig)}
    assert not hasattr(config, "recompute_fc1")
    assert config.recompute_modules == ["core_attn"]  # Megatron's share of the spec only
    assert recompute_fc1("core_attn,fc1") and recompute_fc1("fc1")
    assert not recompute_fc1("mlp") and not recompute_fc1("full") and not recompute_fc1("none")
    block = block_spec(config, arch, device, pp_rank=0, recompute_fc1=True)
    assert [layer.submodules.mlp.params["recompute_fc1"] for layer in block.layer_specs] == [True, True]
    assert layer_spec(arch, device).submodules.mlp.params == {"compiled_kernels": False, "recompute_fc1": False}
