"""The training loop: Megatron schedules over the encoder + frozen LM, exact resume,
checkpoints with an HF encoder export at every save, NaN guarding, and saves on SIGTERM/SIGUSR1."""
from __future__ import annotations

import json
import math
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import torch
import torch.distributed as dist
from megatron.core import parallel_state as ps
from megatron.core.pipeline_parallel import get_forward_backward_func

from acerag_megatron.data.sampler import DistributedBatchSampler
from acerag_megatron.device import resolve_device
from acerag_megatron.models.recompute import check_layer_support
from acerag_megatron.optimizer_fixes import apply_optimizer_fixes
from acerag_megatron.parallel import data_parallel_size, destroy_parallel, initialize_parallel, launch_world_size
from acerag_megatron.preflight import read_arch
from acerag_megatron.process_setup import describe_process_setup, prepare_process
from acerag_megatron.training.arguments import TrainArguments, notes_for, save_steps_interval
from acerag_megatron.training.build import build_model, build_optimizer, use_fused_adamw, wrap_ddp
from acerag_megatron.training.checkpoint import (fail, latest_checkpoint, load_checkpoint, read_train_state, remove_stale_files,
                                                 save_checkpoint, select_checkpoint)
from acerag_megatron.training.collate import (collate_finetune, collate_finetune_packed, collate_window,
                                              collate_window_packed, collate_window_packed_docs, group_by_tokens,
                                              predicted_tokens, window_packed_tokens)
from acerag_megatron.training.data_setup import build_dataset, resolve_prefixes
from acerag_megatron.training.flops import FORMULA, step_flops
from acerag_megatron.training.loss import loss_scale, make_loss_func
from acerag_megatron.training.memory_estimate import estimate_memory, fit_advice, size
from acerag_megatron.training.micro_batch import MicroBatch
from acerag_megatron.training.optimizer_step import step_if_finite
from acerag_megatron.training.recompute_choice import choose_recompute, fit_ladder, longest_micro_batch
from acerag_megatron.training.resolved_config import resolve_config
from acerag_megatron.training.preemption import StopRequest, exit_with_launcher
from acerag_megatron.training.reporting import Reporter
from acerag_megatron.training.step_cost import sample_costs
from acerag_megatron.training.run_identity import resume_changes, run_identity
from acerag_megatron.training.save_estimate import (counted_bytes, folder_bytes, measure_write_bandwidth,
                                                    save_time_line)
from acerag_megatron.weights.export import export_encoder_hf

MAX_LOGGED_WINDOWS = 64


class Trainer:
    """One training run. `dataset`, `archs` and `load_weights` let the benchmark drive the same
    step with synthetic samples and random weights at real shapes."""

    def __init__(self, args: TrainArguments, *, dataset=None, archs=None, load_weights: bool = True):
        self.args = args
        self.device = resolve_device(args.attention_backend, args.compiled_kernels)
        self.process_setup = prepare_process(self.device)
        for flag in ("recompute_encoder", "recompute_lm"):
            try:
                check_layer_support(flag, getattr(args, flag), self.device.use_te)
            except ValueError as e:
                raise SystemExit(f"error: {e}")
        tp, pp = args.tensor_model_parallel_size, args.pipeline_model_parallel_size
        self.resolved = resolve_config(args, self.device, data_parallel_size(launch_world_size(), tp, pp))
        # args carries the decided values from here on: the builders and the summary read them there.
        for name, value in self.resolved.values().items():
            setattr(args, name, value)
        initialize_parallel(args.tensor_model_parallel_size, args.pipeline_model_parallel_size, args.seed, self.device)
        apply_optimizer_fixes()
        self.dp = ps.get_data_parallel_world_size()
        self.dp_rank = ps.get_data_parallel_rank()
        assert self.dp == self.resolved.data_parallel_size, (self.dp, self.resolved)
        per_step = args.per_device_train_batch_size * self.dp
        self.global_batch = args.global_batch_size or per_step
        if self.global_batch % per_step:
            raise SystemExit(f"error: --global_batch_size {self.global_batch} is not a multiple of "
                             f"per_device_train_batch_size x data-parallel size = {per_step}")
        self.num_microbatches = self.global_batch // per_step
        if archs is None:
            archs = (read_arch(args.language_model_name_or_path, "--language_model_name_or_path"),
                     read_arch(args.encoder_name_or_path, "--encoder_name_or_path"))
        self.lm_arch, self.enc_arch = archs
        if args.recompute_by_estimate:
            self._recompute_by_estimate()
        Path(args.output_dir).mkdir(parents=True, exist_ok=True)

        if dataset is None:
            dataset = build_dataset(args, resolve_prefixes(args, args.language_model_name_or_path))
        self.dataset = dataset
        if len(self.dataset) == 0:
            raise SystemExit("error: no training samples left after mixing and length filtering "
                             f"(min_length {args.min_length}, max_length {args.max_length})")
        # One sampler item is this rank's share of a global batch; an epoch's incomplete last
        # global batch is dropped so every rank takes the same steps.
        try:
            costs = sample_costs(self.dataset, args, self.lm_arch, self.enc_arch) if args.group_by_length else None
            self.sampler = DistributedBatchSampler(
                len(self.dataset), dp_rank=self.dp_rank, dp_size=self.dp,
                micro_batch_size=args.per_device_train_batch_size * self.num_microbatches, seed=args.seed,
                costs=costs, megabatch=args.group_by_length_megabatch)
        except ValueError as e:
            raise SystemExit(f"error: {e}; lower --global_batch_size or add data")
        self.steps_per_epoch = self.sampler.steps_per_epoch
        self.total_steps = args.max_steps if args.max_steps > 0 else args.num_train_epochs * self.steps_per_epoch

        self.model = build_model(args, self.device, self.lm_arch, self.enc_arch, load_weights=load_weights)
        self.ddp = wrap_ddp(args, self.model)
        self.optimizer, self.scheduler = build_optimizer(args, self.ddp, self.total_steps)
        self.step, self.consumed = 0, 0
        self._resume()
        self.sampler.consumed_samples = self.consumed
        self._batches = iter(self.sampler)
        # The next step's micro-batches are collated on a thread while this step runs on the
        # device (packing, index building and mask specs are host work on numpy).
        # Checkpoints record consumed samples, not the iterator, so reading ahead is safe.
        self._collator = ThreadPoolExecutor(max_workers=1, thread_name_prefix="collate")
        self._next_mbs = None
        self.reporter = Reporter(args.output_dir, self.total_steps, dist.get_rank() == 0, args.report_to,
                                 config=vars(args))
        self.reporter.start_step = self.step
        self._stop = StopRequest()
        self._stop.install()

    # ------------------------------------------------------------------ setup helpers
    def _resume(self):
        a = self.args
        if a.save_total_limit is not None and a.save_total_limit < 1:
            fail(f"error: --save_total_limit {a.save_total_limit}: keep at least 1 checkpoint (omit it to keep all)")
        if dist.get_rank() == 0:
            remove_stale_files(a.output_dir, {Path(f.prefix).parent for f in getattr(self.dataset, "files", [])})
        path = select_checkpoint(a.resume_from_checkpoint, a.output_dir)
        if path is None:
            return
        changes = resume_changes(read_train_state(path), run_identity(self.global_batch, self.dataset))
        if changes and not a.allow_resume_changes:
            fail(f"error: {'; '.join(changes)} (resuming {path}); --allow_resume_changes resumes anyway, "
                 "--resume_from_checkpoint none starts fresh")
        for change in changes if dist.get_rank() == 0 else []:
            print(f"warning: --allow_resume_changes: {change}", flush=True)
        state = load_checkpoint(path, self.model, self.optimizer)
        if self.args.fused_optimizer:
            use_fused_adamw(self.optimizer)  # the load replaced the param groups with the saved ones
        self.scheduler.load_state_dict(state["scheduler"])
        self.step, self.consumed = state["step"], state["consumed_samples"]
        if dist.get_rank() == 0:
            print(f"resumed from {path} at step {self.step} ({self.consumed} samples consumed)", flush=True)

    def summary_lines(self) -> list[str]:
        a = self.args
        mode = f"window-mode pretraining ({a.window_impl})" if a.window_mode else "finetuning"
        lines = [
            "acerag_megatron: compressive encoder training",
            f"  mode           {mode} (stage {a.stage})",
            f"  device         {self.device.describe()}",
            f"  process setup  {describe_process_setup(self.process_setup, self.device)}",
            f"  parallelism    world {dist.get_world_size()} = TP {a.tensor_model_parallel_size} x "
            f"PP {a.pipeline_model_parallel_size} x DP {self.dp}; SP {a.sequence_parallel}",
            f"  precision      {'bf16 (fp32 main params)' if a.bf16 else 'fp32'}; recompute encoder {a.recompute_encoder}, "
            f"LM {a.recompute_lm}; "
            f"optimizer {'distributed' if a.use_distributed_optimizer else 'replicated'} "
            f"{'fused' if a.fused_optimizer else 'foreach'} AdamW; "
            f"grad reduce {'overlapped' if a.overlap_grad_reduce else 'after backward'}",
            f"  resolved       {self.resolved.describe()}",
            f"  LM (frozen)    {a.language_model_name_or_path}: {self.lm_arch.num_layers} layers, hidden {self.lm_arch.hidden_size}",
            f"  encoder        {a.encoder_name_or_path}: {a.encoder_num_hidden_layers} layers (trainable)",
            f"  data           {len(self.dataset)} samples; {self.dataset.describe()}",
            f"  batch          global {self.global_batch} = micro {a.per_device_train_batch_size} x DP {self.dp} x "
            f"{self.num_microbatches} micro-batches",
            f"  steps          {self.total_steps} ({self.steps_per_epoch}/epoch), lr {a.learning_rate}, warm-up "
            f"{math.ceil(a.warmup_ratio * self.total_steps)}; start at step {self.step}",
            f"  flops          {FORMULA}",
            f"  memory (est.)  {self.memory_summary()}",
        ]
        return lines + [f"  note           {n}" for n in notes_for(a)]

    def memory_estimate(self, lm_tokens: int, enc_tokens: int, predicted: int, recompute_lm: str | None = None,
                        recompute_encoder: str | None = None):
        """Estimated peak GiB per GPU (stage 0) for one micro-batch of these token counts, with
        this run's recompute choices unless others are given."""
        a = self.args
        return estimate_memory(
            self.lm_arch, self.enc_arch, a.encoder_num_hidden_layers, lm_tokens, enc_tokens, predicted,
            tp=a.tensor_model_parallel_size, pp=a.pipeline_model_parallel_size, dp=self.dp,
            sequence_parallel=a.sequence_parallel, distributed_optimizer=a.use_distributed_optimizer, bf16=a.bf16,
            recompute_lm=recompute_lm or a.recompute_lm, recompute_encoder=recompute_encoder or a.recompute_encoder)

    def _recompute_by_estimate(self):
        """--gradient_checkpointing: the cheapest recompute pair whose estimate fits the longest
        micro-batch in this device's memory (host RAM on CPU)."""
        a = self.args
        shape = longest_micro_batch(a)
        if self.device.device == "cuda":
            capacity = torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory / 2**30
        else:
            capacity = psutil.virtual_memory().total / 2**30
        (a.recompute_lm, a.recompute_encoder), why = choose_recompute(
            lambda lm, enc: self.memory_estimate(shape.lm_tokens, shape.enc_tokens, shape.predicted,
                                                 recompute_lm=lm, recompute_encoder=enc),
            capacity, self.device.use_te)
        a.recompute_reason = (f"longest micro-batch {shape.lm_tokens} LM + {shape.enc_tokens} encoder tokens: {why} "
                              f"({'GPU' if self.device.device == 'cuda' else 'host'} memory)")

    def memory_summary(self) -> str:
        """Static GiB, then activation GiB per 1,000 tokens (a micro-batch's tokens decide the peak)."""
        static = self.memory_estimate(0, 0, 0)
        per_lm = self.memory_estimate(1000, 0, 1000).activations
        per_enc = self.memory_estimate(0, 1000, 0).activations
        weights = static.lm_weights + static.encoder_weights
        return (f"{size(weights + static.encoder_grads + static.optimizer_state)} static (weights {size(weights)}, "
                f"encoder grads {size(static.encoder_grads)}, optimizer {size(static.optimizer_state)}) + "
                f"activations {size(per_lm)} per 1k LM tokens (all predicted) + {size(per_enc)} per 1k encoder "
                "tokens; allocator overhead not included")

    # ------------------------------------------------------------------ data
    def _step_microbatches(self) -> list[MicroBatch]:
        """This rank's micro-batches for the next step (its share of one global batch)."""
        a = self.args
        # Sequence parallelism splits sequences over TP ranks: pad widths to a multiple of TP.
        mult = a.tensor_model_parallel_size if a.sequence_parallel else 1
        epoch, indices = next(self._batches)
        samples = [self.dataset.get(i, epoch) for i in indices]
        if a.window_mode and a.max_tokens_per_micro_batch > 0:
            # Short documents share a packed row, each behind its own block mask.
            groups = group_by_tokens(samples, a.max_tokens_per_micro_batch, length=window_packed_tokens)
            collate_fn = lambda g, sc: collate_window_packed_docs(g, 0, sc, mult)  # noqa: E731
        elif a.window_mode:
            collate = collate_window_packed if a.window_impl == "packed" else collate_window
            groups, collate_fn = [[s] for s in samples], lambda g, sc: collate(g[0], 0, sc, mult)
        elif a.max_tokens_per_micro_batch > 0:
            groups = group_by_tokens(samples, a.max_tokens_per_micro_batch)
            collate_fn = lambda g, sc: collate_finetune_packed(g, 0, sc, mult)  # noqa: E731
        else:
            per = a.per_device_train_batch_size
            groups = [samples[i:i + per] for i in range(0, len(samples), per)]
            collate_fn = lambda g, sc: collate_finetune(g, 0, sc, mult)  # noqa: E731
        # Megatron divides each micro-batch loss by this rank's micro-batch count; the scale
        # makes the step's gradient the mean over the global batch's per-sample means.
        scale = loss_scale(len(groups), self.dp, self.global_batch)
        return [collate_fn(g, scale) for g in groups]

    # ------------------------------------------------------------------ one step
    def _forward_step(self, data_iterator, model):
        batch: MicroBatch = next(data_iterator)
        return model(batch.inputs.to(self.device.device, non_blocking=True)), make_loss_func(batch)

    def _microbatches(self) -> list[MicroBatch]:
        mbs = self._next_mbs.result() if self._next_mbs is not None else self._step_microbatches()
        if self.step + 1 < self.total_steps:
            self._next_mbs = self._collator.submit(self._step_microbatches)
        else:
            self._next_mbs = None
        return mbs

    def train_step(self) -> dict:
        # Timed from before the data arrive: a step that waits for collation counts the wait.
        t0 = time.time()
        mbs = self._microbatches()
        try:
            return self._train_step(mbs, t0)
        except torch.cuda.OutOfMemoryError as e:
            raise SystemExit(f"error: out of GPU memory at step {self.step + 1}: {self._oom_advice(mbs)}") from e

    def _oom_advice(self, mbs: list[MicroBatch]) -> str:
        """The memory estimate of the largest micro-batch, and a recompute choice that fits."""
        a = self.args
        mb = max(mbs, key=lambda m: m.inputs.lm_input_ids.numel() + m.inputs.enc_input_ids.numel())
        counts = (mb.inputs.lm_input_ids.numel(), mb.inputs.enc_input_ids.numel(), predicted_tokens(mb))
        capacity = torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory / 2**30
        current = (a.recompute_lm, a.recompute_encoder)
        advice = fit_advice(lambda lm, enc: self.memory_estimate(*counts, recompute_lm=lm, recompute_encoder=enc),
                            capacity, current, ladder=fit_ladder(self.device.use_te))
        return f"micro-batch of {counts[0]} LM and {counts[1]} encoder tokens; {advice}"

    def _train_step(self, mbs: list[MicroBatch], t0: float) -> dict:
        self.ddp.zero_grad_buffer()
        self.optimizer.zero_grad()
        reduced = get_forward_backward_func()(
            forward_step_func=self._forward_step, data_iterator=iter(mbs), model=[self.ddp],
            num_microbatches=len(mbs), seq_length=max(mb.inputs.lm_input_ids.shape[1] for mb in mbs),
            micro_batch_size=mbs[0].inputs.lm_input_ids.shape[0], forward_only=False)
        stats = self._reduce_stats(reduced)
        grad_norm, lr = float("nan"), self.optimizer.param_groups[0]["lr"]
        # Every rank holds the same reduced loss and gradient norm, so all skip together.
        updated, skip_reason = False, f"non-finite loss {stats['loss']}"
        if math.isfinite(stats["loss"]):
            updated, grad_norm = step_if_finite(self.optimizer)
            skip_reason = None if updated else f"non-finite gradient norm {grad_norm} (loss {stats['loss']:.4g})"
        # A skipped update still consumes its batch and its step of the schedule: the learning
        # rate stays a function of `step`, as an uninterrupted or resumed run computes it.
        self.scheduler.step(increment=1)
        if self.device.device == "cuda":
            torch.cuda.synchronize()
        dt = time.time() - t0
        self.consumed += self.global_batch
        self.step += 1
        return {**stats, "finite": updated, "skip_reason": skip_reason, "grad_norm": grad_norm, "lr": lr,
                "step_time": dt, **self._throughput(mbs, dt)}

    def _reduce_stats(self, reduced: list[dict]) -> dict:
        """Loss as the reference reports it (mean of per-sample means over the global batch)."""
        buf = torch.zeros(2 + MAX_LOGGED_WINDOWS, dtype=torch.float64)
        for r in reduced or []:
            buf[0] += float(r["sample_mean_sum"])
            buf[1] += float(r["num_samples"])
        if reduced and self.args.window_mode:
            rows = reduced[-1]["row_loss"][:MAX_LOGGED_WINDOWS].double().cpu()
            buf[2:2 + len(rows)] = rows if self.dp_rank == 0 else 0
        t = buf.to(self.device.device)
        # Values live on the last pipeline stage: sum over PP (others hold zeros) and DP.
        dist.all_reduce(t, group=ps.get_pipeline_model_parallel_group())
        head = t[:2].clone()
        dist.all_reduce(head, group=ps.get_data_parallel_group())
        t, head = t.cpu(), head.cpu()
        loss = float(head[0] / max(float(head[1]), 1.0)) if float(head[1]) else float("nan")
        out = {"loss": loss}
        if self.args.window_mode:
            out["window_loss"] = [round(float(x), 4) for x in t[2:] if float(x) != 0.0]
        return out

    def _throughput(self, mbs: list[MicroBatch], dt: float) -> dict:
        flops, enc_tokens, lm_tokens = 0.0, 0, 0
        for mb in mbs:
            acc = mb.accounting
            enc_tokens += sum(acc.enc_real_lengths)
            lm_tokens += sum(acc.lm_real_lengths)
            flops += step_flops(self.lm_arch, self.enc_arch, self.args.encoder_num_hidden_layers,
                                acc.enc_real_lengths, acc.lm_real_lengths, predicted_tokens(mb),
                                acc.lm_attention_pairs)
        t = torch.tensor([enc_tokens, lm_tokens, flops], dtype=torch.float64, device=self.device.device)
        slowest = t[2:].clone()
        dist.all_reduce(t, group=ps.get_data_parallel_group())
        dist.all_reduce(slowest, op=dist.ReduceOp.MAX, group=ps.get_data_parallel_group())
        world = dist.get_world_size()
        # Every model-parallel rank of a DP replica computes the same count: divide by the world.
        tflops_per_gpu = float(t[2]) / dt / 1e12 / world
        # The step lasts as long as its costliest rank: the rest is idle data-parallel time.
        dp_eff = float(t[2]) / (self.dp * float(slowest)) if float(slowest) > 0 else 1.0
        return {"context_tokens_per_s": float(t[0]) / dt, "lm_tokens_per_s": float(t[1]) / dt,
                "tflops_per_gpu": tflops_per_gpu, "mfu": tflops_per_gpu / self.args.peak_tflops,
                "dp_efficiency": dp_eff}

    # ------------------------------------------------------------------ saving
    def _export_encoder(self, out_dir: Path):
        if self.model.encoder is not None:
            export_encoder_hf(self.model.encoder, out_dir, hf_config_from=self.args.encoder_name_or_path,
                              tokenizer_from=self.args.language_model_name_or_path)

    def save(self):
        state = {"step": self.step, "consumed_samples": self.consumed, "scheduler": self.scheduler.state_dict(),
                 "global_batch_size": self.global_batch, "run": run_identity(self.global_batch, self.dataset),
                 "args": {k: v for k, v in vars(self.args).items()}}
        path = save_checkpoint(self.args.output_dir, self.step, self.model, self.optimizer, state, self._export_encoder,
                               save_total_limit=self.args.save_total_limit)
        self.reporter.note(f"saved {path}")

    def _should_save(self) -> bool:
        a = self.args
        if self.step == self.total_steps:
            return True  # the final state is always saved
        if a.save_strategy == "epoch":
            return self.step % self.steps_per_epoch == 0
        if a.save_strategy == "steps":
            return self.step % save_steps_interval(a.save_steps, self.total_steps) == 0
        return False

    # ------------------------------------------------------------------ loop
    def memory_gib(self) -> float:
        if self.device.device == "cuda":
            return torch.cuda.max_memory_allocated() / 2**30
        return psutil.Process().memory_info().rss / 2**30

    def _save_time_line(self) -> str:
        """Collective: the expected duration of one save (rank 0's text; others get '')."""
        counted = counted_bytes(self.model.encoder, self.args.bf16, self.device.device)
        if dist.get_rank() != 0:
            return ""
        latest = latest_checkpoint(self.args.output_dir)
        size, source = ((folder_bytes(latest), f"size of {latest.name}") if latest is not None
                        else (counted, "counted from the encoder parameters"))
        return save_time_line(size, source, measure_write_bandwidth(Path(self.args.output_dir)))

    def _save_on_stop(self, saved_step: int):
        t0 = time.time()
        if self.step != saved_step:
            self.save()
            done = f"saved at step {self.step} ({time.time() - t0:.1f} s)"
        elif self.step:
            done = f"nothing trained since step {self.step}, nothing to save"
        else:
            done = "nothing trained yet"
        self.reporter.note(f"{self._stop.signal_name or 'stop requested by another rank'}: {done}; exiting")

    def train(self):
        self.reporter.summary(self.summary_lines() + [f"  save (est.)    {self._save_time_line()}"])
        if dist.get_rank() == 0:
            (Path(self.args.output_dir) / "config.json").write_text(
                json.dumps({**vars(self.args), "resolved": self.resolved.record()}, indent=2))
        bad_in_a_row = 0
        saved_step = self.step  # the state training starts from is on disk, or nothing has trained
        # The ranks agree before every step, so they all stop at the same one, whether the signal
        # came during a step or during a save (then that save stands and no step follows it).
        stopped = False
        while self.step < self.total_steps and not (stopped := self._stop.agree(self.device.device)):
            m = self.train_step()
            bad_in_a_row = 0 if m["finite"] else bad_in_a_row + 1
            if not m["finite"]:
                self.reporter.note(f"warning: step {self.step}: {m['skip_reason']}; update skipped "
                                   f"({bad_in_a_row} in a row)")
                if bad_in_a_row >= self.args.max_nonfinite_steps:
                    raise SystemExit(f"error: {bad_in_a_row} consecutive non-finite steps (loss or gradient norm); "
                                     "stopping (lower the learning rate or check the data)")
            self.reporter.progress(self.step, m["loss"])
            if self.step % self.args.logging_steps == 0 or self.step == self.total_steps or self.step == 1:
                rec = {"loss": m["loss"], "lr": m["lr"], "grad_norm": m["grad_norm"],
                       "step_time_s": m["step_time"], "context_tokens_per_s": m["context_tokens_per_s"],
                       "lm_tokens_per_s": m["lm_tokens_per_s"], "tflops_per_gpu": m["tflops_per_gpu"],
                       "mfu": m["mfu"], "dp_efficiency": m["dp_efficiency"], "memory_gib": self.memory_gib(),
                       "consumed_samples": self.consumed}
                if "window_loss" in m:
                    rec["window_loss"] = m["window_loss"]
                self.reporter.log(self.step, rec)
            if self._should_save():
                self.save()
                saved_step = self.step
        if stopped:
            self._save_on_stop(saved_step)
        self.reporter.close()


def run(args: TrainArguments):
    """One run; the caller holds the --output_dir lock (train_compressive_encoder.main)."""
    exit_with_launcher()
    trainer = Trainer(args)
    try:
        trainer.train()
    except BaseException:
        trainer.reporter.close(exit_code=1)  # a W&B run marked failed, the bar's line ended before the error
        raise
    finally:
        destroy_parallel()
