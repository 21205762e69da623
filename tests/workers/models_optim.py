"""Two-rank check of the optimizer resume fixes: DDP + DistributedOptimizer over the encoder of a
CompressiveModel; save after step 1, resume (also at TP=2), and the losses of steps 2-3 equal an
uninterrupted run.

Run: torchrun --nproc-per-node 2 -m tests.workers.models_optim WORKDIR
"""
from __future__ import annotations

import os
import sys

from tests.workers.models_common import DEVICE, init, report, tiny_models

import torch  # noqa: E402
from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig, finalize_model_grads  # noqa: E402
from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer  # noqa: E402
from megatron.core.pipeline_parallel import get_forward_backward_func  # noqa: E402

from acerag_megatron.models.arch import ModelArch  # noqa: E402
from acerag_megatron.models.compressive_model import build_compressive_model  # noqa: E402
from acerag_megatron.optimizer_fixes import apply_optimizer_fixes, prime_optimizer_for_load  # noqa: E402
from acerag_megatron.weights.dist_ckpt import load_sharded, save_sharded  # noqa: E402
from acerag_megatron.weights.load import load_hf_into_encoder, load_hf_into_lm  # noqa: E402
from tests.workers.models_single import ENC_LAYERS, splice_batch  # noqa: E402

OPTIM_METADATA = {"distrib_optim_sharding_type": "fully_reshardable", "chained_optim_avoid_prefix": True,
                  "singleton_local_shards": False}


def build(path: str, tp: int, sp: bool):
    arch = ModelArch.from_hf(path)
    model = build_compressive_model(arch, arch, ENC_LAYERS, tp=tp, pp=1, sequence_parallel=sp,
                                    params_dtype=torch.float32, device=DEVICE)
    load_hf_into_lm(model.lm, path)
    load_hf_into_encoder(model.encoder, path)
    ddp = DistributedDataParallel(model.config, DistributedDataParallelConfig(
        grad_reduce_in_fp32=True, use_distributed_optimizer=True), model)
    model.config.finalize_model_grads_func = finalize_model_grads
    optimizer = get_megatron_optimizer(OptimizerConfig(optimizer="adam", lr=1e-2, weight_decay=0.01, clip_grad=1.0,
                                                       use_distributed_optimizer=True), [ddp])
    return model, ddp, optimizer


def forward_backward(ddp, optimizer, batch: dict) -> list[dict]:
    """One micro-batch through Megatron's schedule with fresh gradients (no optimizer step)."""
    ddp.zero_grad_buffer()
    optimizer.zero_grad()

    def forward_step(data_iterator, module):
        def loss_func(loss_BS):
            total = loss_BS.sum() / (loss_BS != 0).sum()
            return total, {"loss": total.detach()}
        return module(next(data_iterator)), loss_func

    return get_forward_backward_func()(forward_step_func=forward_step, data_iterator=iter([batch]), model=[ddp],
                                       num_microbatches=1, seq_length=16, micro_batch_size=2, forward_only=False)


def train_step(ddp, optimizer, step: int) -> float:
    out = forward_backward(ddp, optimizer, splice_batch(seed=100 + step))  # same batch on every rank
    optimizer.step()
    return float(out[0]["loss"])


def sharded(model, optimizer, is_loading: bool) -> dict:
    state = {"model": model.sharded_state_dict()}
    state["optimizer"] = optimizer.sharded_state_dict(state["model"], is_loading=is_loading, metadata=OPTIM_METADATA)
    return state


def main() -> None:
    workdir = sys.argv[1]
    apply_optimizer_fixes()
    init(1, 1)
    path = tiny_models(workdir)["qwen3"]
    _, ddp, optimizer = build(path, 1, False)
    uninterrupted = [train_step(ddp, optimizer, s) for s in range(3)]

    init(1, 1, seed=99)
    model, ddp, optimizer = build(path, 1, False)
    train_step(ddp, optimizer, 0)
    ckpt = os.path.join(workdir, "optim_ckpt")
    save_sharded(sharded(model, optimizer, False), ckpt)
    for tp, sp in ((1, False), (2, True)):
        init(tp, 1, seed=7)
        model, ddp, optimizer = build(path, tp, sp)
        prime_optimizer_for_load(optimizer)
        loaded = load_sharded(sharded(model, optimizer, True), ckpt)
        model.load_state_dict(loaded["model"])
        optimizer.load_state_dict(loaded["optimizer"])
        resumed = [train_step(ddp, optimizer, s) for s in (1, 2)]
        report(f"resume_tp{tp}_loss_diff", max(abs(a - b) for a, b in zip(resumed, uninterrupted[1:])))
    report("training_changes_loss", abs(uninterrupted[2] - uninterrupted[0]))


if __name__ == "__main__":
    main()
