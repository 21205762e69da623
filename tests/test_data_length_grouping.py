"""Length-grouped, cost-balanced global batches: data-parallel efficiency on the seed's length
distribution, the epoch's sample set unchanged, exact resume, balanced rank shares."""
from itertools import islice

import numpy as np
import pytest

from acerag_megatron.data.length_grouping import balance, dp_efficiency
from acerag_megatron.data.sampler import DistributedBatchSampler
from acerag_megatron.models.arch import ModelArch
from acerag_megatron.training.benchmark import SHAPES
from acerag_megatron.training.step_cost import finetune_cost, window_cost

LLAMA = ModelArch.from_config_dict(dict(SHAPES["llama2-7b"]), source="llama2-7b")


def seed_pretrain_lengths(n: int, seed: int = 0) -> np.ndarray:
    """RedPajama-like: log-normal, median 2,200 tokens, sigma 0.8, kept in (1024, 16000)."""
    rng = np.random.default_rng(seed)
    out = np.zeros(0, dtype=np.int64)
    while len(out) < n:
        draw = np.exp(np.log(2200) + 0.8 * rng.standard_normal(2 * n)).astype(np.int64)
        out = np.concatenate([out, draw[(draw > 1024) & (draw < 16000)]])
    return out[:n]


def window_costs(lengths):
    return np.array([window_cost(int(n), 1024, (1, 2, 4, 8), LLAMA, LLAMA, 8) for n in lengths])


def samplers(costs, dp, share=1, seed=3, megabatch=50, n=None):
    n = len(costs) if costs is not None else n
    return [DistributedBatchSampler(n, dp_rank=r, dp_size=dp, micro_batch_size=share, seed=seed,
                                    costs=costs, megabatch=megabatch) for r in range(dp)]


def epoch_efficiency(costs, dp, grouped: bool, share: int = 1) -> float:
    """Useful work over dp x the slowest rank, summed over one epoch's steps."""
    ranks = samplers(costs if grouped else None, dp, share, n=len(costs))
    steps = ranks[0].steps_per_epoch
    useful = slowest = 0.0
    for per_rank in zip(*(islice(iter(s), steps) for s in ranks)):
        loads = [costs[idx].sum() for _, idx in per_rank]
        useful, slowest = useful + sum(loads), slowest + max(loads)
    return useful / (dp * slowest)


def test_grouping_lifts_dp8_efficiency_on_the_seed_distribution():
    costs = window_costs(seed_pretrain_lengths(4000))
    random_order = epoch_efficiency(costs, 8, grouped=False)
    grouped = epoch_efficiency(costs, 8, grouped=True)
    print(f"DP=8 efficiency: random {random_order:.3f}, grouped {grouped:.3f}")
    assert random_order < 0.6  # every step waits for its longest document
    assert grouped >= 0.90


def test_several_samples_per_rank_are_balanced_longest_first():
    costs = window_costs(seed_pretrain_lengths(4000, seed=1))
    assert epoch_efficiency(costs, 8, grouped=True, share=4) >= 0.97


def test_the_epoch_trains_the_same_samples_in_another_order():
    costs = window_costs(seed_pretrain_lengths(1003, seed=2))
    for epoch in (0, 1):
        plain = samplers(None, 4, share=2, n=len(costs))[0]
        grouped = samplers(costs, 4, share=2)[0]
        kept = plain.epoch_order(epoch)[:plain.samples_per_epoch]
        order = grouped.epoch_order(epoch)
        assert len(order) == plain.samples_per_epoch
        assert sorted(order.tolist()) == sorted(kept.tolist())
        assert order.tolist() != kept.tolist()


def test_resume_from_consumed_samples_is_exact_and_epochs_differ():
    costs = window_costs(seed_pretrain_lengths(600, seed=4))
    full = [list(islice(iter(s), 40)) for s in samplers(costs, 2, share=3, megabatch=4)]
    for rank, sampler in enumerate(samplers(costs, 2, share=3, megabatch=4)):
        sampler.consumed_samples = 17 * sampler.global_batch_size
        assert list(islice(iter(sampler), 23)) == full[rank][17:]
    s = samplers(costs, 2, share=3)[0]
    assert s.epoch_order(0).tolist() != s.epoch_order(1).tolist()
    assert s.epoch_order(1).tolist() == samplers(costs, 2, share=3)[0].epoch_order(1).tolist()


def test_batches_are_cost_sorted_within_a_megabatch():
    costs = np.arange(64, dtype=np.float64)
    order = samplers(costs, 2, share=2, megabatch=16)[0].epoch_order(0)
    batches = order.reshape(-1, 4)
    spread = np.ptp(costs[batches], axis=1)
    assert spread.max() == 3  # each global batch holds 4 consecutive costs


def test_balance_keeps_counts_and_beats_contiguous_slices():
    costs = np.array([10.0, 9, 8, 1, 1, 1, 1, 1])
    idx = np.arange(8)
    out = balance(idx, costs, 2)
    shares = out.reshape(2, 4)
    assert sorted(out.tolist()) == idx.tolist()
    loads = costs[shares].sum(axis=1)
    assert dp_efficiency(loads) > dp_efficiency(costs[idx.reshape(2, 4)].sum(axis=1))
    assert dp_efficiency([1.0, 1.0]) == 1.0 and dp_efficiency([2.0, 1.0]) == pytest.approx(0.75)


def test_cost_model_grows_with_length():
    w = window_costs([1100, 2200, 8000, 15999])
    assert np.all(np.diff(w) > 0)
    f = [finetune_cost(n, 4096, LLAMA, LLAMA, 8) for n in (500, 4000, 30000)]
    assert f[0] < f[1] < f[2]


def test_trainer_groups_at_dp2_and_logs_the_step_efficiency(assets, tmp_path):
    import json

    from tests.launch import run_torchrun
    from tests.test_train_e2e import TRAINER, _pretrain_args

    out = tmp_path / "run"
    run_torchrun(TRAINER, 2, *_pretrain_args(assets, out, "--max_steps", "2", "--save_strategy", "no",
                                             "--group_by_length", "--group_by_length_megabatch", "2"))
    records = [json.loads(line) for line in open(out / "metrics.jsonl")]
    assert len(records) == 2
    assert all(0 < r["dp_efficiency"] <= 1 for r in records)
