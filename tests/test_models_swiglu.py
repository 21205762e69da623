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
