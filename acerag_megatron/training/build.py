"""Megatron objects for a run, each built in one place: model (this pipeline stage), DDP
wrapper, distributed optimizer over the encoder parameters, and the LR schedule."""
from __future__ import annotations

import math

import torch
from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig, finalize_model_grads
from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer
from megatron.core.optimizer_param_scheduler import OptimizerParamScheduler
from megatron.core.transformer.module import Float16Module

from acerag_megatron.models.compressive_model import build_compressive_model
from acerag_megatron.weights.hf_folder import resolve_on_each_node
from acerag_megatron.weights.load import load_hf_into_encoder, load_hf_into_lm


def build_model(args, device, lm_arch, enc_arch, load_weights: bool = True):
    """CompressiveModel for this pipeline stage with HF weights loaded (LM frozen, encoder
    trainable); random weights when load_weights is False (benchmarks at real shapes)."""
    dtype = torch.bfloat16 if args.bf16 else torch.float32
    model = build_compressive_model(
        lm_arch, enc_arch, args.encoder_num_hidden_layers,
        tp=args.tensor_model_parallel_size, pp=args.pipeline_model_parallel_size,
        sequence_parallel=args.sequence_parallel, params_dtype=dtype, device=device,
        recompute_encoder=args.recompute_encoder, recompute_lm=args.recompute_lm)
    if load_weights:
        resolve_on_each_node({"language_model_name_or_path": args.language_model_name_or_path,
                              "encoder_name_or_path": args.encoder_name_or_path})
        load_hf_into_lm(model.lm, args.language_model_name_or_path)
    if load_weights and model.encoder is not None:
        load_hf_into_encoder(model.encoder, args.encoder_name_or_path)
    if device.device == "cuda":
        model.cuda(torch.cuda.current_device())
    return model


def wrap_ddp(args, model):
    """Megatron DDP over the trainable (encoder) parameters; the frozen LM has no grad buffers."""
    config = model.config
    # Packed samples change length from one micro-batch to the next: pipeline p2p exchanges shapes.
    config.variable_seq_lengths = True
    module = Float16Module(config, model) if args.bf16 else model
    ddp = DistributedDataParallel(
        config=config,
        ddp_config=DistributedDataParallelConfig(grad_reduce_in_fp32=True,
                                                 overlap_grad_reduce=bool(args.overlap_grad_reduce),
                                                 use_distributed_optimizer=args.use_distributed_optimizer),
        module=module)
    config.finalize_model_grads_func = finalize_model_grads
    if args.overlap_grad_reduce:
        # Bucketed reductions start during the backward of the last micro-batch; the earlier
        # ones accumulate locally. The encoder's backward runs last, so its gradient buckets
        # reduce while the rest of it is still computing.
        config.no_sync_func = ddp.no_sync
        config.grad_sync_func = ddp.start_grad_sync
    return ddp


def build_optimizer(args, ddp, total_steps: int):
    """AdamW (torch implementation; fp32 main params under bf16) + linear warm-up/decay to 0."""
    opt = get_megatron_optimizer(
        OptimizerConfig(optimizer="adam", lr=args.learning_rate, min_lr=0.0, weight_decay=args.weight_decay,
                        adam_beta1=args.adam_beta1, adam_beta2=args.adam_beta2, adam_eps=args.adam_epsilon,
                        clip_grad=args.max_grad_norm, bf16=bool(args.bf16),
                        params_dtype=torch.bfloat16 if args.bf16 else torch.float32,
                        use_distributed_optimizer=args.use_distributed_optimizer),
        [ddp])
    if args.fused_optimizer:
        use_fused_adamw(opt)
    warmup = math.ceil(args.warmup_ratio * total_steps)  # as transformers' get_warmup_steps
    sched = OptimizerParamScheduler(
        opt, init_lr=0.0, max_lr=args.learning_rate, min_lr=0.0, lr_warmup_steps=warmup,
        lr_decay_steps=max(total_steps, warmup + 1), lr_decay_style="linear",
        start_wd=args.weight_decay, end_wd=args.weight_decay, wd_incr_steps=max(total_steps, 1),
        wd_incr_style="constant")
    return opt, sched


def use_fused_adamw(opt) -> None:
    """Switch the torch AdamW that megatron-core builds (without TE or apex) to its fused kernel.

    torch otherwise picks the foreach implementation: about fifteen passes over the encoder's
    float32 parameters, gradients and moments per step (1.75 B parameters for Llama-2-7B's
    eight layers), and a temporary the size of the second moment. The flags live in the param
    groups, which a checkpoint load replaces with the saved ones, so the trainer calls this
    again after loading; existing 'step' tensors move to their parameter's device, where the
    fused kernel reads them.
    """
    for inner in getattr(opt, "chained_optimizers", [opt]):
        torch_opt = inner.optimizer
        torch_opt.defaults.update(fused=True, foreach=False)
        for group in torch_opt.param_groups:
            group.update(fused=True, foreach=False)
            for param in group["params"]:
                state = torch_opt.state.get(param)
                if state and torch.is_tensor(state.get("step")):
                    state["step"] = state["step"].to(device=param.device, dtype=torch.float32).clone()
