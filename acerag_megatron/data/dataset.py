"""Training dataset over preprocessed prefixes: resampling, length filter and per-(seed, epoch, index) samples."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from acerag_megatron.data.finetune import FinetuneSample, build_finetune_sample
from acerag_megatron.data.mixing import resample_indices
from acerag_megatron.data.preprocess import DataError, read_manifest
from acerag_megatron.data.window import WindowSample, build_window_sample


@dataclass(kw_only=True)
class SampleConfig:
    """How stored documents become training samples (seed flag names)."""

    window_mode: bool
    """True: pretraining windows over `text` documents; False: fine-tuning conversations."""
    window: int = 1024
    """W, pretraining segment length."""
    encoder_max_length: int = 4096
    """E, encoder group (pretraining) / chunk (fine-tuning) length."""
    lm_max_length: int = 4096
    """Lmax, fine-tuning truncation budget."""
    comp_candidates: tuple[int, ...] = (1, 2, 4, 8)
    """Compression ratios drawn uniformly."""
    pretraining_down_scaling_method: str = "stride"
    """'stride' or 'random' (unsorted) state selection in pretraining."""
    down_scaling_method: str = "stride"
    """'stride', 'random' or 'terminal' state selection in fine-tuning."""
    min_length: int | None = None
    """Keep a document iff min_length < stored length (None: no lower bound)."""
    max_length: int | None = None
    """Keep a document iff stored length < max_length (None: no upper bound)."""
    sort_pretrain_random_indices: bool = False
    """Sort pretraining random selections (METHOD.md A1 ablation; reference: unsorted)."""
    drop_over_budget: bool = False
    """Drop fine-tuning samples with |head| + |tail| >= lm_max_length (METHOD.md A12 fix)."""
    exact_truncation: bool = False
    """Keep exactly max(R, 0) context tokens when truncating (METHOD.md A12 fix)."""

    def __post_init__(self):
        self.comp_candidates = tuple(int(c) for c in self.comp_candidates)
        if not self.comp_candidates or min(self.comp_candidates) < 1:
            raise ValueError(f"comp_candidates must be positive integers, got {self.comp_candidates}")
        if self.pretraining_down_scaling_method not in ("stride", "random"):
            raise ValueError(f"pretraining_down_scaling_method must be 'stride' or 'random', "
                             f"got {self.pretraining_down_scaling_method!r}")
        if self.down_scaling_method not in ("stride", "random", "terminal"):
            raise ValueError(f"down_scaling_method must be 'stride', 'random' or 'terminal', "
                             f"got {self.down_scaling_method!r}")


@dataclass
class _File:
    prefix: str
    manifest: dict
    data: object  # megatron IndexedDataset
    first_sequence: np.ndarray = field(repr=False)


class CompressiveDataset:
    """Samples of one or more preprocessed prefixes, concatenated in the given order.

    Ratios and random selections come from a generator seeded by (seed, epoch, file, index), so a
    sample is the same on every rank and after resume, and differs between epochs.
    """

    def __init__(self, prefixes: list[str], config: SampleConfig, *, seed: int,
                 data_splits: list[float] | None = None, train_num_per_data: int | None = None):
        from megatron.core.datasets.indexed_dataset import IndexedDataset

        self.config, self.seed = config, seed
        self.files: list[_File] = []
        self.stats: dict = {"files": [], "num_samples": 0}
        entry_file, entry_doc, entry_len = [], [], []
        mode = "pretrain" if config.window_mode else "finetune"
        for fid, prefix in enumerate(prefixes):
            manifest = read_manifest(prefix)
            if manifest["mode"] != mode:
                raise DataError(f"{prefix}.json: mode {manifest['mode']!r} but window_mode={config.window_mode} "
                                f"needs {mode!r} data")
            data = IndexedDataset(str(prefix), mmap=True)
            first = np.asarray(data.document_indices[:-1], dtype=np.int64)
            self.files.append(_File(str(prefix), manifest, data, first))
            docs, lengths, file_stats = self._select(fid, data, first, mode, data_splits, train_num_per_data)
            file_stats.update(name=manifest["dataset_name"], prefix=str(prefix), records=int(len(first)),
                              warnings=dict(manifest["counts"].get("kept_with_warning", {})))
            self.stats["files"].append(file_stats)
            entry_file.append(np.full(len(docs), fid, dtype=np.int64))
            entry_doc.append(docs)
            entry_len.append(lengths)
        self._file = np.concatenate(entry_file) if entry_file else np.zeros(0, np.int64)
        self._doc = np.concatenate(entry_doc) if entry_doc else np.zeros(0, np.int64)
        self.lengths = np.concatenate(entry_len) if entry_len else np.zeros(0, np.int64)
        """Stored (uncompressed) length of every sample."""
        self.stats["num_samples"] = int(len(self._doc))

    def _select(self, fid, data, first, mode, data_splits, train_num_per_data):
        cfg = self.config
        seq_len = np.asarray(data.sequence_lengths, dtype=np.int64)
        per_doc = 1 if mode == "pretrain" else 4
        doc_len = sum(seq_len[first + k] for k in range(per_doc)) if len(first) else np.zeros(0, np.int64)
        if mode == "pretrain":
            docs = np.arange(len(first), dtype=np.int64)  # pretraining is never resampled
        else:
            docs = resample_indices(len(first), fid, data_splits, train_num_per_data, self.seed)
        lengths = doc_len[docs]
        keep = np.ones(len(docs), dtype=bool)
        dropped = {}

        def drop(reason, mask):
            dropped[reason] = int((keep & mask).sum())
            keep[mask] = False

        if cfg.min_length is not None:
            drop("too_short", lengths <= cfg.min_length)
        if cfg.max_length is not None:
            drop("too_long", lengths >= cfg.max_length)
        if mode == "pretrain":
            drop("single_segment", lengths <= cfg.window)  # METHOD.md A8
        elif cfg.drop_over_budget:
            other = seq_len[first[docs]] + seq_len[first[docs] + 2] + seq_len[first[docs] + 3]
            drop("over_budget", other >= cfg.lm_max_length)
        stats = {"after_resampling": int(len(docs)), "dropped": dropped, "kept": int(keep.sum())}
        return docs[keep], lengths[keep], stats

    def __len__(self) -> int:
        return len(self._doc)

    def source(self, index: int) -> tuple[str, int]:
        """(dataset name, document number in its prefix) of a sample."""
        fid = int(self._file[index])
        return self.files[fid].manifest["dataset_name"], int(self._doc[index])

    def sequences(self, index: int) -> list[np.ndarray]:
        """The stored sequences of a sample (pretrain: [text]; finetune: [head, context, tail_prompt, answer])."""
        f = self.files[int(self._file[index])]
        start = int(f.first_sequence[int(self._doc[index])])
        count = f.manifest["sequences_per_document"]
        return [np.asarray(f.data[start + k], dtype=np.int64) for k in range(count)]

    def get(self, index: int, epoch: int, ratio: int | None = None) -> WindowSample | FinetuneSample:
        """Build sample `index` for `epoch` (deterministic); `ratio` overrides the drawn fine-tuning ratio."""
        if not 0 <= index < len(self):
            raise IndexError(f"sample {index} out of range 0..{len(self) - 1}")
        cfg = self.config
        fid = int(self._file[index])
        rng = np.random.default_rng([self.seed, epoch, fid, index])
        seqs = self.sequences(index)
        if cfg.window_mode:
            return build_window_sample(seqs[0], window=cfg.window, encoder_max_length=cfg.encoder_max_length,
                                       comp_candidates=cfg.comp_candidates,
                                       method=cfg.pretraining_down_scaling_method, rng=rng,
                                       sort_random_indices=cfg.sort_pretrain_random_indices)
        drawn = int(rng.choice(np.asarray(cfg.comp_candidates)))
        manifest = self.files[fid].manifest
        head, context, tail_prompt, answer = seqs
        return build_finetune_sample(
            head, context, np.concatenate([tail_prompt, answer]), len(tail_prompt),
            ratio=drawn if ratio is None else ratio, lm_max_length=cfg.lm_max_length,
            encoder_max_length=cfg.encoder_max_length, bos_id=manifest["tokenizer"]["bos_id"],
            instruction_ids=manifest["instruction_ids"], method=cfg.down_scaling_method, rng=rng,
            drop_over_budget=cfg.drop_over_budget, exact_truncation=cfg.exact_truncation)

    def describe(self) -> str:
        """Per-file counts: records (and those preprocessing kept with a warning), after resampling,
        dropped by reason, kept."""
        lines = [f"CompressiveDataset: {len(self)} samples from {len(self.files)} file(s)"]
        for s in self.stats["files"]:
            drops = ", ".join(f"{k} {v}" for k, v in s["dropped"].items()) or "none"
            warned = ", ".join(f"{k} {v}" for k, v in s["warnings"].items())
            warned = f" (with warning: {warned})" if warned else ""
            lines.append(f"  {s['name']}: records {s['records']}{warned}, after resampling {s['after_resampling']}, "
                         f"dropped ({drops}), kept {s['kept']}  [{Path(s['prefix']).name}]")
        return "\n".join(lines)
