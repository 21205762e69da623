"""Finetuning at DP=2 when a rank's micro-batches have nothing to compress (empty contexts).

Megatron's DDP reduces a gradient bucket only once every parameter in it has a gradient; with
the reduction overlapped with the backward (the default) a rank whose micro-batch touches
only part of the encoder never issues the bucket's reduction and the step fails. Every
layout below must train and give the losses and gradient norms of the DP=1 run on the same
samples.
"""
import json

import pytest

from acerag_megatron import CONTEXT_TAG
from acerag_megatron.data.sampler import DistributedBatchSampler
from acerag_megatron.tiny.corpus import make_records
from tests.launch import run_torchrun
from tests.test_train_e2e import TRAINER, _metrics

SEED, GLOBAL_BATCH = 0, 4
# Step 1: rank 1's samples have empty contexts (only rank 0 compresses); step 2: every sample's
# context is empty (nobody compresses); step 3: every sample has a context.
STEPS = 3
RECORDS = STEPS * GLOBAL_BATCH


def _empty_records() -> set[int]:
    """Records to empty so the DP=2 run (per_device 1, GLOBAL_BATCH per step) sees the steps above."""
    per_rank = GLOBAL_BATCH // 2
    ranks = [iter(DistributedBatchSampler(RECORDS, dp_rank=r, dp_size=2, micro_batch_size=per_rank, seed=SEED))
             for r in (0, 1)]
    steps = [[next(it)[1] for it in ranks] for _ in range(STEPS)]
    return set(steps[0][1]) | set(steps[1][0]) | set(steps[1][1])


def _write_data(path, empty: set[int]):
    records = make_records("longalpaca", RECORDS, seed=3, words=40)
    for i in empty:
        user = records[i]["conversations"][0]
        user["context"], user["content"] = "", user["prompt"].replace(CONTEXT_TAG, "")
    path.write_text(json.dumps(records))
    return str(path)


def _args(assets, data, out, *extra):
    return ["--language_model_name_or_path", assets["llama"], "--window_mode", "false", "--lm_max_length", "256",
            "--encoder_num_hidden_layers", "2", "--encoder_max_length", "64", "--comp_candidates", "2", "4",
            "--data_files", data, "--min_length", "0", "--max_length", "32000", "--learning_rate", "1e-3",
            "--warmup_ratio", "0", "--stage", "ft", "--seed", str(SEED), "--output_dir", str(out),
            "--logging_steps", "1", "--save_strategy", "no", "--max_steps", str(STEPS),
            "--global_batch_size", str(GLOBAL_BATCH), *extra]


PACKED = ["--max_tokens_per_micro_batch", "100000"]
NO_OVERLAP = ["--overlap_grad_reduce", "False"]
# Padded: two one-sample micro-batches per rank; packed: one row holding both samples.
LAYOUTS = {"dp1": (1, []), "dp2": (2, []), "dp2_no_overlap": (2, NO_OVERLAP), "dp2_packed": (2, PACKED),
           "dp2_packed_no_overlap": (2, PACKED + NO_OVERLAP)}


def test_dp2_with_empty_contexts_trains_like_dp1(assets, tmp_path):
    data = _write_data(tmp_path / "empty_contexts.json", _empty_records())
    got = {}
    for name, (nproc, extra) in LAYOUTS.items():
        out = tmp_path / name
        run_torchrun(TRAINER, nproc, *_args(assets, data, out, *extra))
        got[name] = [(r["loss"], r["grad_norm"]) for _, r in sorted(_metrics(out).items())]
    ref = got["dp1"]
    assert len(ref) == STEPS
    for name, rows in got.items():
        assert [x[0] for x in rows] == pytest.approx([x[0] for x in ref], abs=2e-5), name
        assert [x[1] for x in rows] == pytest.approx([x[1] for x in ref], rel=1e-4, abs=1e-7), name
    assert ref[0][1] > 0 and ref[2][1] > 0  # steps with contexts train the encoder
    # Nothing to compress anywhere: an exact zero gradient (also confirms the trainer drew the
    # sample order _empty_records predicts).
    assert ref[1][1] == 0.0, ref
