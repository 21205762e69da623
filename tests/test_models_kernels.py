"""Compiled SwiGLU and RoPE kernels against their eager formulas and Megatron's RoPE.

The end-to-end check (a model with compiled kernels gives the eager loss and gradients) runs in
tests/workers/models_single.py.
"""
import pytest
import torch
from megatron.core.models.common.embeddings import rope_utils

from acerag_megatron.models.kernels import compiled
from acerag_megatron.models.rope import rope_bshd, use_compiled_rope
from acerag_megatron.models.swiglu import swiglu, swiglu_forward


def _rand(*shape, dtype=torch.float32, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).to(dtype)


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-6), (torch.bfloat16, 2e-2)])
def test_compiled_swiglu_matches_autograd(dtype, tol):
    for rows in (7, 33):  # a second length must not change results (dynamic shapes)
        x, grad = _rand(rows, 24, dtype=dtype), _rand(rows, 12, dtype=dtype, seed=1)
        ref_x = x.clone().requires_grad_()
        ref = swiglu_forward(ref_x)
        ref.backward(grad)
        got_x = x.clone().requires_grad_()
        got = swiglu(got_x, use_compiled=True)
        got.backward(grad)
        assert (got.float() - ref.float()).abs().max() <= tol * ref.float().abs().max()
        assert (got_x.grad.float() - ref_x.grad.float()).abs().max() <= tol * ref_x.grad.float().abs().max()


def test_rope_formula_is_megatrons():
    t, freqs = _rand(9, 2, 3, 8), _rand(9, 2, 1, 8, seed=1)
    assert torch.equal(rope_bshd(t, freqs), rope_utils._apply_rotary_pos_emb_bshd(t, freqs))


def test_compiled_rope_matches_eager_forward_and_backward():
    for seq in (10, 21):
        t, freqs, grad = _rand(seq, 1, 4, 16), _rand(seq, 1, 1, 16, seed=1), _rand(seq, 1, 4, 16, seed=2)
        ref_t, got_t = t.clone().requires_grad_(), t.clone().requires_grad_()
        ref = rope_bshd(ref_t, freqs)
        ref.backward(grad)
        got = compiled(rope_bshd)(got_t, freqs)
        got.backward(grad)
        assert (got - ref).abs().max() <= 1e-6
        assert (got_t.grad - ref_t.grad).abs().max() <= 1e-6


def test_megatron_rope_is_rerouted_only_where_it_applies(monkeypatch):
    original = rope_utils._apply_rotary_pos_emb_bshd
    monkeypatch.setattr(rope_utils, "_apply_rotary_pos_emb_bshd", original)  # restored after the test
    use_compiled_rope()
    routed = rope_utils._apply_rotary_pos_emb_bshd
    assert routed is not original and routed.compiled_route
    use_compiled_rope()
    assert rope_utils._apply_rotary_pos_emb_bshd is routed  # idempotent
    t, freqs = _rand(6, 1, 2, 8), _rand(6, 1, 1, 8, seed=1)
    assert (routed(t, freqs) - original(t, freqs)).abs().max() <= 1e-6
    for kwargs in ({"rotary_interleaved": True}, {"mscale": 2.0}):  # not ours: Megatron's own path
        assert torch.equal(routed(t, freqs, **kwargs), original(t, freqs, **kwargs))


def test_a_failing_compile_falls_back_to_eager(monkeypatch):
    from acerag_megatron.models import kernels

    def broken_compile(fn, **kwargs):
        def run(*args):
            raise RuntimeError("no compiler toolchain")
        return run

    monkeypatch.setattr(kernels.torch, "compile", broken_compile)
    monkeypatch.setattr(kernels, "_compiled", {})
    x = _rand(5, 8)
    with pytest.warns(UserWarning, match="swiglu_forward failed .*no compiler toolchain"):
        out = compiled(swiglu_forward)(x)
    assert torch.equal(out, swiglu_forward(x))
    assert torch.equal(compiled(swiglu_forward)(x), swiglu_forward(x))  # no second warning needed


def test_token_dimension_is_dynamic_and_the_others_are_constants():
    from torch._dynamo.utils import counters

    from acerag_megatron.models.kernels import _CompiledOrEager

    def scale_rows(x, w):
        return x * w

    kernel = _CompiledOrEager(scale_rows)
    before = counters["stats"]["unique_graphs"]
    for rows in (7, 33, 50):  # packed rows of new lengths: no recompile
        x, w = _rand(rows, 24), _rand(24, seed=1)
        assert torch.equal(kernel(x, w), x * w)
    assert counters["stats"]["unique_graphs"] - before == 1


def test_cached_cos_sin_follow_the_angles_tensor(monkeypatch):
    original = rope_utils._apply_rotary_pos_emb_bshd
    monkeypatch.setattr(rope_utils, "_apply_rotary_pos_emb_bshd", original)
    use_compiled_rope()
    routed = rope_utils._apply_rotary_pos_emb_bshd
    t, freqs = _rand(6, 1, 2, 8), _rand(6, 1, 1, 8, seed=1)
    assert (routed(t, freqs) - original(t, freqs)).abs().max() <= 1e-6
    assert (routed(t * 2, freqs) - original(t * 2, freqs)).abs().max() <= 1e-6  # same angles, from the cache
    freqs.mul_(3)  # changed in place: the cache must not serve the old cos/sin
    assert (routed(t, freqs) - original(t, freqs)).abs().max() <= 1e-6
    other = _rand(6, 1, 1, 8, seed=2)
    assert (routed(t, other) - original(t, other)).abs().max() <= 1e-6
    half = t.to(torch.bfloat16)  # cos/sin per dtype; the fused kernel rounds once, eager after every op
    exact = original(half.float(), other)
    assert (routed(half, other).float() - exact).abs().max() <= 1e-2 * exact.abs().max()
