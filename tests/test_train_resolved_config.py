"""Device- and layout-dependent defaults: decided by one pure function, shown in the start-up
summary and recorded in the run's config.json."""
import json
from types import SimpleNamespace

import pytest

from acerag_megatron.device import DeviceInfo
from acerag_megatron.parallel import data_parallel_size, launch_world_size
from acerag_megatron.training.resolved_config import resolve_config
from tests.launch import run_torchrun
from tests.test_train_e2e import TRAINER, _finetune_args


def _device(kind: str) -> DeviceInfo:
    return DeviceInfo(device=kind, dist_backend="nccl" if kind == "cuda" else "gloo", use_te=False,
                      attention_backend="sdpa", megatron_core="0.16.1")


def _args(bf16=None, fused_optimizer=None, overlap_grad_reduce=None):
    return SimpleNamespace(bf16=bf16, fused_optimizer=fused_optimizer, overlap_grad_reduce=overlap_grad_reduce)


@pytest.mark.parametrize("kind, dp, expected", [
    ("cpu", 1, (False, False, False)),
    ("cpu", 4, (False, False, True)),
    ("cuda", 1, (True, True, False)),
    ("cuda", 8, (True, True, True)),
])
def test_defaults_follow_the_device_and_the_data_parallel_size(kind, dp, expected):
    args = _args()
    got = resolve_config(args, _device(kind), dp)
    assert (got.bf16, got.fused_optimizer, got.overlap_grad_reduce) == expected
    assert got.defaulted == ("bf16", "fused_optimizer", "overlap_grad_reduce")
    assert got.record() == {"bf16": expected[0], "fused_optimizer": expected[1], "overlap_grad_reduce": expected[2],
                            "device": kind, "data_parallel_size": dp,
                            "defaulted": ["bf16", "fused_optimizer", "overlap_grad_reduce"]}
    assert args == _args()  # decided, not written back


def test_given_values_win_over_the_defaults():
    got = resolve_config(_args(bf16=True, overlap_grad_reduce=False), _device("cpu"), 2)
    assert got.values() == {"bf16": True, "fused_optimizer": False, "overlap_grad_reduce": False}
    assert got.defaulted == ("fused_optimizer",)
    assert got.describe() == "bf16=True (given), fused_optimizer=False (cpu default), overlap_grad_reduce=False (given)"


def test_data_parallel_size_from_the_launch(monkeypatch):
    assert data_parallel_size(8, 2, 2) == 2
    with pytest.raises(ValueError, match="world size 6 is not divisible by tensor \\(4\\) x pipeline \\(1\\)"):
        data_parallel_size(6, 4, 1)
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.delenv("RANK", raising=False)
    assert launch_world_size() == 1  # no torchrun: initialize_parallel makes a 1-rank group
    monkeypatch.setenv("RANK", "0")
    assert launch_world_size() == 4


def test_config_json_records_the_resolved_values(assets, tmp_path):
    out = tmp_path / "run"
    text = run_torchrun(TRAINER, 2, *_finetune_args(assets, out, "--max_steps", "1", "--bf16", "False"), timeout=300)
    config = json.loads((out / "config.json").read_text())
    assert config["resolved"] == {"bf16": False, "fused_optimizer": False, "overlap_grad_reduce": True,
                                  "device": "cpu", "data_parallel_size": 2,
                                  "defaulted": ["fused_optimizer", "overlap_grad_reduce"]}
    assert (config["bf16"], config["fused_optimizer"], config["overlap_grad_reduce"]) == (False, False, True)
    assert ("resolved       bf16=False (given), fused_optimizer=False (cpu default), "
            "overlap_grad_reduce=True (DP 2 default)") in text
    assert "process setup  CPU compatibility patches (megatron-core 0.16.1)" in text
