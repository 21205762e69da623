"""Cross-entropy through the frozen LM head without materialising the logits.

The head is frozen, so its backward needs only the gradient with respect to the hidden states,
and that gradient is known as soon as the softmax is: (softmax - onehot) @ W. Computing it in
the forward pass, a chunk of rows at a time, keeps one [chunk, V/tp] float32 block alive instead
of [N, V/tp] logits in bf16 plus float32 copies and the saved softmax (gigabytes per micro-batch
for Qwen3's 152k vocabulary). The backward only scales the stored [N, H] gradient by the
incoming per-token loss gradient.

Vocab parallelism follows Megatron's vocab_parallel_cross_entropy: each tensor-parallel rank
holds V/tp rows of the head; the row max, the sum of exponentials and the target logit are
all-reduced (float32, [chunk] each). The gradient with respect to the hidden states is a partial
sum per rank, reduced by the region function the caller wraps the input in (all-reduce without
sequence parallelism, reduce-scatter with it), exactly as ColumnParallelLinear does.
"""
from __future__ import annotations

import torch
import torch.distributed as dist

# float32 logits per chunk: 256 MiB bounds the transient block while keeping each head matmul
# large enough to run at full GEMM efficiency (441 rows for a 152k vocabulary, 2,097 for 32k).
CHUNK_BYTES = 256 << 20


class _FrozenHeadCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden_NH, weight_VH, target_N, vocab_start: int, real_vocab: int, chunk_rows: int, group):
        num_rows, local_vocab = hidden_NH.shape[0], weight_VH.shape[0]
        loss_N = torch.empty(num_rows, dtype=torch.float32, device=hidden_NH.device)
        grad_NH = torch.empty_like(hidden_NH)
        vocab_ids = torch.arange(vocab_start, vocab_start + local_vocab, device=hidden_NH.device)
        padding_V = vocab_ids >= real_vocab if vocab_start + local_vocab > real_vocab else None
        distributed = group is not None and dist.get_world_size(group) > 1
        for start in range(0, num_rows, chunk_rows):
            rows = slice(start, min(start + chunk_rows, num_rows))
            # bf16 matmul, then float32, as the unfused head + vocab_parallel_cross_entropy do.
            logits = torch.matmul(hidden_NH[rows], weight_VH.t()).float()
            if padding_V is not None:
                logits.masked_fill_(padding_V, float("-inf"))
            row_max = logits.max(dim=-1).values
            if distributed:
                dist.all_reduce(row_max, op=dist.ReduceOp.MAX, group=group)
            logits.sub_(row_max.unsqueeze(-1))
            local_target = target_N[rows] - vocab_start
            here = (local_target >= 0) & (local_target < local_vocab)
            local_target = local_target.masked_fill(~here, 0).unsqueeze(-1)
            target_logit = logits.gather(-1, local_target).squeeze(-1).masked_fill(~here, 0.0)
            probs = logits.exp_()
            sum_exp = probs.sum(dim=-1)
            if distributed:
                dist.all_reduce(target_logit, group=group)
                dist.all_reduce(sum_exp, group=group)
            loss_N[rows] = torch.log(sum_exp) - target_logit
            probs.div_(sum_exp.unsqueeze(-1))
            probs.scatter_add_(-1, local_target, -here.to(probs.dtype).unsqueeze(-1))
            grad_NH[rows] = torch.matmul(probs.to(weight_VH.dtype), weight_VH)
        ctx.save_for_backward(grad_NH)
        return loss_N

    @staticmethod
    def backward(ctx, grad_loss_N):
        (grad_NH,) = ctx.saved_tensors
        grad_hidden = (grad_NH.float() * grad_loss_N.unsqueeze(-1)).to(grad_NH.dtype)
        return grad_hidden, None, None, None, None, None, None


def frozen_head_cross_entropy(hidden_NH: torch.Tensor, weight_VH: torch.Tensor, target_N: torch.Tensor,
                              vocab_start: int = 0, real_vocab: int | None = None, group=None,
                              chunk_rows: int | None = None) -> torch.Tensor:
    """Per-row cross-entropy of `hidden_NH @ weight_VH.T` against `target_N`, in float32.

    Args:
        hidden_NH: [N, H] hidden states of the rows that predict a token (replicated over `group`).
        weight_VH: [V/tp, H] this rank's frozen head rows, covering vocab ids vocab_start...
        target_N: [N] target token ids (all valid; select predicted rows before calling).
        vocab_start: first vocab id of this rank's rows.
        real_vocab: ids at or above it are padding and get no probability (default: no padding).
        group: tensor-parallel group the vocabulary is split over (None = not split).
        chunk_rows: rows per chunk (default: CHUNK_BYTES of float32 logits).

    Returns:
        Loss [N] float32. Its gradient flows to hidden_NH only; it is this rank's partial sum
        when the vocabulary is split, to be reduced over `group` by the caller's region function.
    """
    if weight_VH.requires_grad:
        raise ValueError("frozen_head_cross_entropy: the head weight must be frozen (requires_grad=False)")
    local_vocab = weight_VH.shape[0]
    if real_vocab is None:
        real_vocab = vocab_start + local_vocab
    if chunk_rows is None:
        chunk_rows = max(1, CHUNK_BYTES // (4 * local_vocab))
    return _FrozenHeadCrossEntropy.apply(hidden_NH, weight_VH, target_N, vocab_start, real_vocab, chunk_rows, group)
