"""Two-rank check of step_if_finite on the trainer's optimizer (DDP + DistributedOptimizer at DP=2):
a finite step updates; an inf or NaN in the gradient shard of rank 1 only makes BOTH ranks skip
with weights and Adam state untouched; Megatron's own step on the same gradients writes NaN.

Run: torchrun --nproc-per-node 2 -m tests.workers.optimizer_step WORKDIR
"""
from __future__ import annotations

import math
import sys

from tests.workers.models_common import init, report, tiny_models

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from megatron.core import parallel_state as ps  # noqa: E402

from acerag_megatron.optimizer_fixes import apply_optimizer_fixes  # noqa: E402
from acerag_megatron.training.optimizer_step import step_if_finite  # noqa: E402
from tests.workers.models_optim import build, forward_backward  # noqa: E402
from tests.workers.models_single import splice_batch  # noqa: E402


def backward(ddp, optimizer, seed: int) -> None:
    forward_backward(ddp, optimizer, splice_batch(seed=seed))


def poison_rank1_shard(ddp, value: float) -> None:
    """One element of the reduced gradient that rank 1's optimizer shard reads, on rank 1 only."""
    if ps.get_data_parallel_rank() != 1:
        return
    bucket = ddp.buffers[0].buckets[0]
    bucket.grad_data.view(-1).chunk(ps.get_data_parallel_world_size())[1][0] = value


def snapshot(model, optimizer) -> list[torch.Tensor]:
    """Model weights, fp32 main params and every Adam state tensor of this rank."""
    out = [p.detach().clone() for p in model.encoder.parameters()]
    for inner in optimizer.chained_optimizers:
        for group in inner.optimizer.param_groups:
            for p in group["params"]:
                out.append(p.detach().clone())
                out += [v.detach().clone() for v in inner.optimizer.state[p].values() if torch.is_tensor(v)]
    return out


def gathered(value: float) -> list[float]:
    """Every rank's value, in rank order: rank 0 prints them, so two ranks' lines never interleave."""
    values = [None] * dist.get_world_size()
    dist.all_gather_object(values, float(value))
    return values


def report_min(name: str, value: float) -> None:
    values = gathered(value)
    if dist.get_rank() == 0:
        report(name, min(values), collective=False)


def report_per_rank(name: str, value: float) -> None:
    values = gathered(value)
    if dist.get_rank() == 0:
        for rank, v in enumerate(values):
            report(f"{name}_rank{rank}", v, collective=False)


def changed(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return len(a) != len(b) or any(not torch.equal(x, y) for x, y in zip(a, b))


def main() -> None:
    apply_optimizer_fixes()
    init(1, 1)
    assert ps.get_data_parallel_world_size() == 2
    model, ddp, optimizer = build(tiny_models(sys.argv[1])["llama"], 1, False)

    backward(ddp, optimizer, seed=1)
    before = snapshot(model, optimizer)
    updated, norm = step_if_finite(optimizer)
    report_min("finite_updated", float(updated and math.isfinite(norm) and norm > 0))
    report_min("finite_changed_weights", float(changed(before, snapshot(model, optimizer))))

    for name, value in (("inf", math.inf), ("nan", math.nan)):
        backward(ddp, optimizer, seed=2)
        poison_rank1_shard(ddp, value)
        before = snapshot(model, optimizer)
        updated, norm = step_if_finite(optimizer)
        report_per_rank(f"{name}_skipped", float(not updated and not math.isfinite(norm)))
        report(f"{name}_state_changed", float(changed(before, snapshot(model, optimizer))))

    # After skipped steps the next finite gradient updates normally.
    backward(ddp, optimizer, seed=3)
    updated, norm = step_if_finite(optimizer)
    report_min("after_skip_updated", float(updated and math.isfinite(norm)))

    # What the trainer did before: Megatron's step clips by max_norm / inf = 0 and inf * 0 = NaN.
    backward(ddp, optimizer, seed=4)
    poison_rank1_shard(ddp, math.inf)
    success, _, _ = optimizer.step()
    nan_weights = any(not torch.isfinite(p).all() for p in model.encoder.parameters())
    report("megatron_step_success_with_nan_weights", float(bool(success) and nan_weights))


if __name__ == "__main__":
    main()
