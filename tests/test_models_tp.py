"""Two-rank checks: TP=2 (with and without sequence parallel) parity with transformers and with
TP=1, wrong weight layouts caught by the comparison, torch_dist TP2 -> TP1 resharding."""
import pytest

from tests.launch import run_torchrun
from tests.workers.models_report import parse_checks

TOL = 1e-4


@pytest.fixture(scope="module")
def checks(tmp_path_factory):
    return parse_checks(run_torchrun("tests.workers.models_tp", 2, str(tmp_path_factory.mktemp("tp")), timeout=300))


@pytest.mark.parametrize("fam", ["llama", "qwen3"])
@pytest.mark.parametrize("sp", ["", "_sp"])
def test_tp2_matches_transformers(checks, fam, sp):
    assert checks[f"{fam}_tp2{sp}_logits"] <= TOL
    assert checks[f"{fam}_tp2{sp}_encoder"] <= TOL


@pytest.mark.parametrize("tag", ["tp2", "tp2_sp"])
def test_tp2_splice_loss_and_grads_equal_tp1(checks, tag):
    for what in ("splice_loss", "final_norm_grad", "layer_norm_grad", "embed_grad"):
        assert checks[f"{tag}_{what}_vs_tp1"] <= TOL, what


def test_wrong_layouts_are_caught(checks):
    assert checks["wrong_qkv_diff"] > 1e-2
    assert checks["wrong_fc1_diff"] > 1e-2


def test_checkpoint_saved_at_tp2_loads_at_tp1(checks):
    assert checks["ckpt_tp2_to_tp1_logits"] <= 1e-5


def test_encoder_export_at_tp2_is_bit_exact(checks):
    assert checks["tp2_encoder_export_bits"] == 0


def test_head_loss_with_the_vocabulary_split_over_two_ranks(checks):
    assert checks["head_loss_split_loss"] <= 1e-6
    assert checks["head_loss_split_grad"] <= 1e-6
