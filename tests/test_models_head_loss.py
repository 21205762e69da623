"""The chunked frozen-head cross-entropy against the unfused head + torch cross-entropy.

The vocabulary split over two ranks is checked in tests/workers/models_tp.py, directly and end to
end (TP=2 splice loss and encoder gradients equal TP=1, with and without sequence parallelism).
"""
import pytest
import torch
import torch.nn.functional as F

from acerag_megatron.models.head_loss import frozen_head_cross_entropy


def _inputs(dtype, rows=13, hidden=16, vocab=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    hidden_NH = torch.randn(rows, hidden, generator=g, dtype=torch.float64).to(dtype).requires_grad_()
    weight_VH = torch.randn(vocab, hidden, generator=g, dtype=torch.float64).to(dtype)
    grad_out = torch.rand(rows, generator=g, dtype=torch.float64).float()
    return hidden_NH, weight_VH, grad_out


def _reference(hidden_NH, weight_VH, target, real_vocab, grad_out):
    logits = (hidden_NH @ weight_VH.t()).float()[:, :real_vocab]
    loss = F.cross_entropy(logits, target, reduction="none")
    (grad,) = torch.autograd.grad(loss, hidden_NH, grad_out)
    return loss, grad


@pytest.mark.parametrize("chunk_rows", [1, 4, 13, 100])
def test_matches_unfused_with_padded_vocab(chunk_rows):
    hidden_NH, weight_VH, grad_out = _inputs(torch.float64)
    real_vocab = 37  # rows 37..39 of the head are padding and must get no probability
    target = torch.randint(0, real_vocab, (hidden_NH.shape[0],), generator=torch.Generator().manual_seed(1))
    ref_loss, ref_grad = _reference(hidden_NH, weight_VH, target, real_vocab, grad_out)
    loss = frozen_head_cross_entropy(hidden_NH, weight_VH, target, real_vocab=real_vocab, chunk_rows=chunk_rows)
    (grad,) = torch.autograd.grad(loss, hidden_NH, grad_out)
    assert loss.dtype == torch.float32
    assert (loss.double() - ref_loss.double()).abs().max() <= 1e-6
    assert (grad - ref_grad).abs().max() <= 1e-6


def test_bf16_close_to_unfused():
    hidden_NH, weight_VH, grad_out = _inputs(torch.bfloat16, rows=64, hidden=64, vocab=500)
    target = torch.randint(0, 500, (64,), generator=torch.Generator().manual_seed(2))
    ref_loss, ref_grad = _reference(hidden_NH, weight_VH, target, 500, grad_out)
    loss = frozen_head_cross_entropy(hidden_NH, weight_VH, target, chunk_rows=16)
    (grad,) = torch.autograd.grad(loss, hidden_NH, grad_out)
    assert (loss - ref_loss).abs().max() <= 1e-5  # same bf16 logits, same float32 softmax
    scale = ref_grad.float().abs().max()
    assert ((grad.float() - ref_grad.float()).abs().max() / scale) <= 2e-2


def test_saves_only_the_hidden_gradient():
    """No logits or softmax stay alive for the backward: only one [N, H] tensor is saved."""
    hidden_NH, weight_VH, _ = _inputs(torch.float32, rows=32, hidden=8, vocab=1000)
    target = torch.zeros(32, dtype=torch.long)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel() * t.element_size()) or t,
                                                  lambda t: t):
        frozen_head_cross_entropy(hidden_NH, weight_VH, target, chunk_rows=8)
    assert saved == [32 * 8 * 4]


def test_refuses_a_trainable_head():
    hidden_NH, weight_VH, _ = _inputs(torch.float32)
    with pytest.raises(ValueError, match="frozen"):
        frozen_head_cross_entropy(hidden_NH, weight_VH.requires_grad_(), torch.zeros(13, dtype=torch.long))
