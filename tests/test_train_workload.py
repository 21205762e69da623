"""The workload model behind tools/benchmark.py's variable-length figures: length distributions,
lengths from a preprocessed prefix, step time vs. cost, the DP=N projection and stage times."""
import numpy as np
import pytest

from acerag_megatron.models.arch import ModelArch
from acerag_megatron.training.benchmark import SHAPES
from acerag_megatron.training.step_cost import window_cost
from acerag_megatron.training.workload import (StepTime, draw_lengths, lengths_from_prefix, parse_length_dist,
                                               representative_lengths, simulate, stage_wall_times)

LLAMA = ModelArch.from_config_dict(dict(SHAPES["llama2-7b"]), source="llama2-7b")


def test_redpajama_preset_is_the_modelled_seed_distribution():
    lengths = draw_lengths("redpajama", 40000, 1024, 16000, seed=0)
    assert parse_length_dist("redpajama") == parse_length_dist("lognormal:2200:0.8")
    assert lengths.min() > 1024 and lengths.max() < 16000
    assert abs(lengths.mean() - 3372) < 0.03 * 3372 and abs(np.quantile(lengths, 0.9) - 6502) < 0.05 * 6502
    assert (draw_lengths("redpajama", 100, 1024, 16000, seed=1) == draw_lengths("redpajama", 100, 1024, 16000,
                                                                                seed=1)).all()


@pytest.mark.parametrize("spec", ["lognormal:1", "gamma:1:2", "lognormal:x:1", "lognormal:-5:1", "lognormal:5:-1"])
def test_bad_length_dist(spec):
    with pytest.raises(ValueError):
        parse_length_dist(spec)


def test_representative_lengths_are_stratum_middles_and_extremes():
    lengths = np.arange(1, 1001)
    mid, ext = representative_lengths(lengths, 4)
    assert np.abs(np.array(mid) - [125.5, 375.5, 625.5, 875.5]).max() <= 0.5
    assert ext == [1, 1000]


def test_step_time_interpolates_and_extends_linearly():
    st = StepTime([10.0, 30.0, 20.0], [1.0, 5.0, 2.0])
    assert st([10.0, 20.0, 30.0]).tolist() == [1.0, 2.0, 5.0]
    assert st(15.0) == pytest.approx(1.5) and st(25.0) == pytest.approx(3.5)
    assert st(40.0) == pytest.approx(8.0) and st(5.0) == pytest.approx(0.5)
    assert st(-100.0) > 0
    with pytest.raises(ValueError):
        StepTime([1.0, 1.0], [1.0, 2.0])


def test_projection_on_the_seed_distribution():
    lengths = draw_lengths("redpajama", 4000, 1024, 16000, seed=2)
    unique = np.unique(lengths)
    costs = np.array([window_cost(int(n), 1024, (1, 2, 4, 8), LLAMA, LLAMA, 8) for n in unique])
    costs = costs[np.searchsorted(unique, lengths)]
    rate = 400e12  # seconds proportional to FLOPs: the time efficiency is the cost efficiency
    st = StepTime([costs.min(), costs.max()], [costs.min() / rate, costs.max() / rate])
    kw = dict(seed=3, megabatch=50, peak_tflops=989.0)
    one = simulate(costs, lengths, st, dp=1, share=1, grouped=False, **kw)
    assert one["dp_efficiency"] == 1.0 and one["mfu"] == pytest.approx(rate / 1e12 / 989.0)
    assert one["tokens_per_s_per_gpu"] == pytest.approx(lengths.sum() / (costs.sum() / rate))
    random_order = simulate(costs, lengths, st, dp=8, share=1, grouped=False, **kw)
    grouped = simulate(costs, lengths, st, dp=8, share=1, grouped=True, **kw)
    assert random_order["samples"] == grouped["samples"] == 4000 and grouped["steps"] == 500
    assert random_order["dp_efficiency"] < 0.6 and grouped["dp_efficiency"] >= 0.90
    for p in (random_order, grouped):
        assert p["dp_time_efficiency"] == pytest.approx(p["dp_efficiency"])
        # Per GPU, DP=N runs at the DP=1 rate times its efficiency.
        assert p["tokens_per_s_per_gpu"] == pytest.approx(one["tokens_per_s_per_gpu"] * p["dp_efficiency"])


def test_stage_wall_times():
    (pt,) = stage_wall_times("pretrain", 1.0, 8)
    assert pt == {"stage": "pretraining", "samples": 90_000, "steps": 11_250, "wall_time_h": 11_250 / 3600}
    ft = stage_wall_times("finetune", 2.0, 8, [("this data", 81)])
    assert [(s["stage"], s["steps"]) for s in ft] == [("LongAlpaca", 1250), ("multi-task", 16250), ("this data", 10)]


def test_lengths_from_a_preprocessed_prefix(assets, tmp_path):
    from acerag_megatron.data.preprocess import preprocess_file

    prefix = tmp_path / "bin" / "redpajama"
    preprocess_file(assets["files"]["redpajama"], assets["llama"], prefix, "pretrain", progress=False)
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    index = IndexedDataset(str(prefix))  # held: its mmap closes with it
    stored = np.array(index.sequence_lengths, dtype=np.int64)
    lo, hi = int(np.sort(stored)[1]), int(np.sort(stored)[-2])
    got = lengths_from_prefix(str(prefix), True, lo, hi, window=8)
    assert sorted(got.tolist()) == sorted(n for n in stored.tolist() if lo < n < hi)
    with pytest.raises(Exception, match="mode"):
        lengths_from_prefix(str(prefix), False, lo, hi, window=8)
