"""Command-line surface of `acerag_megatron.train_compressive_encoder`.

The flat flags of AceRAG's training document keep their names and meanings; Megatron's
parallelism and trainer flags come on top. One dataclass is the source of truth, parsed by
transformers' HfArgumentParser as AceRAG's own scripts parse theirs: every field is a flag
(also spelled with hyphens), its `help` metadata is the flag's help text, `--window_mode True`
and a bare `--gradient_checkpointing` both work, lists take several values, Literal fields
list their choices.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

from transformers import HfArgumentParser

from acerag_megatron.device import ATTENTION_BACKENDS, COMPILED_KERNELS
from acerag_megatron.models.recompute import recompute_modules
from acerag_megatron.preflight import OneLineErrorParser


def _help(text: str, **kw):
    return field(metadata={"help": text}, **kw)


def _optional_switch(text: str):
    """An Optional[bool] flag defaulting to None (decided later) that may also be given bare.

    HfArgumentParser makes a bare flag mean True only for a bool with a default; the metadata
    reaches argparse as is, so nargs/const here give this one the same spellings.
    """
    return field(metadata={"help": text, "nargs": "?", "const": True}, default=None)


@dataclass(kw_only=True)
class TrainArguments:
    # --- the seed's flags -------------------------------------------------------------
    language_model_name_or_path: str = _help("Frozen LM: HF folder or hub id (also the tokenizer).")
    encoder_name_or_path: Optional[str] = _help(
        "Encoder init: HF folder/hub id, or a previous stage's checkpoint-N/compressive_encoder. "
        "Defaults to the LM checkpoint.", default=None)
    encoder_num_hidden_layers: int = _help("Layers of the compressive encoder.", default=8)
    window_mode: bool = _help("Window-mode pretraining (True) or finetuning (False).", default=False)
    window: int = _help("Window (segment) length in window mode.", default=1024)
    min_length: int = _help("Keep samples with min_length < length (strict).", default=1024)
    max_length: int = _help("Keep samples with length < max_length (strict).", default=16000)
    lm_max_length: int = _help("LM token budget used by finetune truncation.", default=4096)
    encoder_max_length: int = _help("Maximum encoder sequence (group / chunk) length.", default=4096)
    comp_candidates: list[int] = _help("Compression ratios drawn from.", default_factory=lambda: [1, 2, 4, 8])
    pretraining_down_scaling_method: Literal["stride", "random"] = _help("Index selection in window mode.",
                                                                         default="stride")
    down_scaling_method: Literal["stride", "random", "terminal"] = _help("Index selection in finetuning.",
                                                                         default="stride")
    data_files: list[str] = _help("Raw JSON/JSONL files (preprocessed into a cache) or preprocessed prefixes.",
                                  default_factory=list)
    data_splits: list[float] = _help("Per-file fraction of train_num_per_data (METHOD §5).", default_factory=list)
    train_num_per_data: Optional[int] = _help("Target sample count per file before splits.", default=None)
    output_dir: str = _help("Run folder: checkpoint-N/, metrics.jsonl, config.json.")
    save_strategy: Literal["epoch", "steps", "no"] = _help("When to save a checkpoint.", default="epoch")
    save_steps: float = _help("With save_strategy steps: every N steps, or a fraction (<1) of total steps.",
                              default=500)
    stage: str = _help("pt (pretraining) or ft (finetuning); informational, window_mode decides the algorithm.",
                       default="pt")
    learning_rate: float = _help("Peak learning rate (AdamW).", default=5e-5)
    per_device_train_batch_size: int = _help("Samples per micro-batch per data-parallel rank.", default=1)
    gradient_checkpointing: bool = _help("Activation recompute: the cheapest recompute choice whose memory estimate "
                                         "fits the longest sample on this device (explicit --recompute* flags win).",
                                         default=False)
    attn_implementation: Optional[str] = _help("Accepted for compatibility; flash_attention_2/sdpa map to "
                                               "--attention_backend auto.", default=None)
    use_safetensors: bool = _help("Accepted for compatibility: folders are read in whatever format they hold.",
                                  default=False)
    deepspeed: Optional[str] = _help("DeepSpeed JSON; its ZeRO stage >= 1 maps to Megatron's distributed optimizer.",
                                     default=None)
    # --- Megatron and trainer flags on top -------------------------------------------
    tensor_model_parallel_size: int = _help("Tensor-parallel size.", default=1)
    pipeline_model_parallel_size: int = _help("Pipeline-parallel size of the frozen LM (encoder on stage 0).",
                                              default=1)
    sequence_parallel: bool = _help("Sequence parallelism (needs tensor parallelism).", default=False)
    global_batch_size: Optional[int] = _help("Samples per optimizer step; default per_device x data-parallel size.",
                                             default=None)
    max_steps: int = _help("Stop after this many steps (-1: by epochs).", default=-1)
    num_train_epochs: int = _help("Epochs over the mixed dataset.", default=1)
    seed: int = _help("Seed for data order, ratios and indices.", default=42)
    logging_steps: int = _help("Log every N steps.", default=50)
    resume_from_checkpoint: Optional[str] = _help(
        "auto (latest complete checkpoint in output_dir), none, or a checkpoint folder.", default="auto")
    save_total_limit: Optional[int] = _help("Keep only the newest N checkpoints (older ones are deleted after each "
                                            "save); default: keep all.", default=None)
    allow_resume_changes: bool = _help("Resume even when the global batch, data files or tokenizer differ from the "
                                       "checkpoint's (the saved data position is then reinterpreted).", default=False)
    recompute: Optional[str] = _help("Activation recompute of both models: none | full | selective (= core_attn) | "
                                     "a comma list of core_attn, mlp, fc1 (fc1 + SwiGLU only).", default=None)
    recompute_encoder: Optional[str] = _help("Recompute spec for the trainable encoder (default: --recompute).",
                                             default=None)
    recompute_lm: Optional[str] = _help("Recompute spec for the frozen LM (default: --recompute).", default=None)
    attention_backend: Literal[ATTENTION_BACKENDS] = _help("Attention kernel (auto: the best this machine has).",
                                                           default="auto")
    compiled_kernels: Literal[COMPILED_KERNELS] = _help("SwiGLU, RoPE and RMSNorm as torch.compile'd fused kernels "
                                                        "(auto: on for a GPU without Transformer Engine).",
                                                        default="auto")
    overlap_grad_reduce: Optional[bool] = _optional_switch("Reduce gradient buckets over data parallel ranks during "
                                                           "the backward (default: on when data parallel).")
    fused_optimizer: Optional[bool] = _optional_switch("torch's fused AdamW kernel instead of its foreach "
                                                       "implementation (default: on for GPU).")
    use_distributed_optimizer: Optional[bool] = _optional_switch("Shard optimizer state over data parallel ranks.")
    bf16: Optional[bool] = _optional_switch("bf16 weights with fp32 main params (default: on for GPU, off on CPU).")
    weight_decay: float = _help("AdamW weight decay.", default=0.0)
    warmup_ratio: float = _help("Linear warm-up fraction of total steps.", default=0.1)
    max_grad_norm: float = _help("Gradient clipping.", default=1.0)
    adam_beta1: float = _help("AdamW beta1.", default=0.9)
    adam_beta2: float = _help("AdamW beta2.", default=0.999)
    adam_epsilon: float = _help("AdamW epsilon.", default=1e-8)
    max_nonfinite_steps: int = _help("Stop after this many consecutive non-finite losses.", default=5)
    peak_tflops: float = _help("Peak bf16 dense TFLOP/s per GPU for MFU (H100/H200: 989).", default=989.0)
    preprocess_cache_dir: Optional[str] = _help("Cache for raw JSON given to --data_files "
                                                "(default <output_dir>/preprocess_cache).", default=None)
    allow_empty_data: bool = _help("Accept a --data_files entry with no usable record (otherwise a one-line "
                                   "error).", default=False)
    max_tokens_per_micro_batch: int = _help(
        "Pack this rank's samples of a step into micro-batches of at most this many LM tokens, one row per "
        "micro-batch: finetune samples behind a document mask, window-mode documents each behind its own "
        "block mask (0: finetune per_device_train_batch_size padded rows, one document per window-mode "
        "micro-batch).", default=0)
    window_impl: Literal["packed", "loop"] = _help("Window mode: packed (one LM pass with a block mask) or loop "
                                                   "(one LM row per window, the reference formulation).",
                                                   default="packed")
    sort_pretrain_random_indices: bool = _help("Sort window-mode random indices (reference keeps them unsorted).",
                                               default=False)
    group_by_length: bool = _help("Length-grouped global batches: within mega-batches, samples of similar estimated "
                                  "step cost share a step, balanced over data-parallel ranks (same samples per "
                                  "epoch, other order).", default=False)
    group_by_length_megabatch: int = _help("Global batches per mega-batch that --group_by_length sorts within.",
                                           default=50)
    report_to: list[str] = _help("Metric sinks, as transformers' report_to: tensorboard, wandb, all (those installed) "
                                 "or none (the default).", default_factory=list)

    def __post_init__(self):
        self._check_ranges()
        # The seed's bare --gradient_checkpointing is resolved against the memory estimate once
        # the models and the device are known (training/recompute_choice.py); explicit flags win.
        self.recompute_by_estimate = (self.gradient_checkpointing and self.recompute is None
                                      and self.recompute_encoder is None and self.recompute_lm is None)
        if self.recompute is None:
            self.recompute = "full" if self.gradient_checkpointing else "none"
        # Each model's spec resolved once here: everything downstream reads the two fields.
        self.recompute_encoder = self.recompute_encoder or self.recompute
        self.recompute_lm = self.recompute_lm or self.recompute
        for flag in ("recompute", "recompute_encoder", "recompute_lm"):
            try:
                recompute_modules(getattr(self, flag))
            except ValueError as e:
                raise ValueError(f"--{flag}: {e}") from None
        if self.compiled_kernels not in COMPILED_KERNELS:
            raise ValueError(f"--compiled_kernels must be one of {COMPILED_KERNELS}, got {self.compiled_kernels!r}")
        if self.window_impl not in ("packed", "loop"):
            raise ValueError(f"--window_impl must be packed|loop, got {self.window_impl!r}")
        if self.window_mode and self.max_tokens_per_micro_batch > 0 and self.window_impl != "packed":
            raise ValueError("--max_tokens_per_micro_batch: window-mode documents share a row only with "
                             "--window_impl packed")
        if self.save_strategy not in ("epoch", "steps", "no"):
            raise ValueError(f"--save_strategy must be epoch|steps|no, got {self.save_strategy!r}")
        if self.window_mode and self.per_device_train_batch_size != 1:
            raise ValueError("--per_device_train_batch_size must be 1 in window mode (one document per micro-batch)")
        if self.sequence_parallel and self.tensor_model_parallel_size == 1:
            self.sequence_parallel = False
        if self.data_splits and len(self.data_splits) > len(self.data_files):
            raise ValueError("--data_splits has more entries than --data_files")
        if not self.data_files:
            raise ValueError("--data_files is required")
        if self.encoder_name_or_path is None:
            self.encoder_name_or_path = self.language_model_name_or_path
        if self.use_distributed_optimizer is None:
            self.use_distributed_optimizer = deepspeed_zero_stage(self.deepspeed) >= 1 if self.deepspeed else True

    def _check_ranges(self):
        """Values no run can use, stopped here rather than deep in the data or the model."""
        positive = ["per_device_train_batch_size", "logging_steps", "encoder_num_hidden_layers", "window",
                    "encoder_max_length", "lm_max_length", "tensor_model_parallel_size", "pipeline_model_parallel_size"]
        if self.max_steps <= 0:
            positive.append("num_train_epochs")  # the run's length comes from the epochs
        for flag in positive:
            if getattr(self, flag) < 1:
                raise ValueError(f"--{flag} {getattr(self, flag)}: must be >= 1")
        if self.global_batch_size is not None and self.global_batch_size < 1:
            raise ValueError(f"--global_batch_size {self.global_batch_size}: must be >= 1")
        bad = [r for r in self.comp_candidates if r < 1]
        if bad:
            raise ValueError(f"--comp_candidates {' '.join(map(str, self.comp_candidates))}: ratio {bad[0]} "
                             "is not a positive integer")
        if self.save_steps <= 0:
            raise ValueError(f"--save_steps {self.save_steps}: must be > 0")
        if not 0 <= self.warmup_ratio <= 1:
            raise ValueError(f"--warmup_ratio {self.warmup_ratio}: must be between 0 and 1")
        check_output_dir(self.output_dir)

    @property
    def encoder_method(self) -> str:
        return self.pretraining_down_scaling_method if self.window_mode else self.down_scaling_method


def check_output_dir(output_dir: str) -> None:
    """The run folder is, or can be created as, a folder (no file in the way)."""
    path = Path(output_dir)
    for part in (path, *path.parents):
        if part.exists():
            if not part.is_dir():
                where = "is a file" if part == path else f"{part} is a file"
                raise ValueError(f"--output_dir {output_dir}: {where}, not a folder")
            return


def deepspeed_zero_stage(path: Optional[str]) -> int:
    """ZeRO stage of a DeepSpeed JSON config (0 when absent)."""
    if not path:
        return 0
    try:
        cfg = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise SystemExit(f"error: --deepspeed {path}: file not found")
    except json.JSONDecodeError as e:
        raise SystemExit(f"error: --deepspeed {path}:{e.lineno}: invalid JSON ({e.msg})")
    return int(cfg.get("zero_optimization", {}).get("stage", 0))


class TrainArgumentParser(OneLineErrorParser, HfArgumentParser):
    """HfArgumentParser over TrainArguments whose mistakes end as one `error: <flag>: <cause>` line."""


def build_parser() -> TrainArgumentParser:
    """The trainer's parser: one flag per TrainArguments field, as HfArgumentParser makes it."""
    return TrainArgumentParser(
        TrainArguments, prog="python -m acerag_megatron.train_compressive_encoder",
        description="Train an AceRAG compressive encoder against a frozen LM on Megatron-core.",
        # A mistyped flag is refused rather than taken as the start of another one.
        allow_abbrev=False)


def parse_args(argv=None) -> TrainArguments:
    """argv (default sys.argv[1:]) -> TrainArguments; a user mistake ends as one `error:` line."""
    parser = build_parser()
    try:
        # No `<script>.args` file is read: the command line alone says what a run does.
        args, unknown = parser.parse_args_into_dataclasses(argv, return_remaining_strings=True,
                                                           look_for_args_file=False)
    except ValueError as e:  # TrainArguments.__post_init__
        raise SystemExit(f"error: {e}")
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    return args


def notes_for(args: TrainArguments) -> list[str]:
    """Human notes on how compatibility flags were mapped (printed in the start-up summary)."""
    notes = []
    if args.deepspeed:
        stage = deepspeed_zero_stage(args.deepspeed)
        notes.append(f"--deepspeed {args.deepspeed}: ZeRO stage {stage} -> Megatron "
                     f"{'distributed optimizer' if args.use_distributed_optimizer else 'replicated optimizer'}")
    if args.gradient_checkpointing:
        how = getattr(args, "recompute_reason", None) or "explicit --recompute flags win"
        notes.append(f"--gradient_checkpointing -> --recompute_encoder {args.recompute_encoder} "
                     f"--recompute_lm {args.recompute_lm} ({how})")
    if args.attn_implementation:
        notes.append(f"--attn_implementation {args.attn_implementation} -> --attention_backend {args.attention_backend}")
    return notes


def save_steps_interval(save_steps: float, total_steps: int) -> int:
    """A fractional save_steps is a fraction of total steps (rounded up), as transformers does."""
    if save_steps < 1:
        return max(1, math.ceil(total_steps * save_steps))
    return int(save_steps)
