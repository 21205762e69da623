"""Two-rank pipeline checks: PP=2 logits and HF export (untied and tied embeddings), encoder export
from stage 0, and CompressiveModel through Megatron's 1F1B schedule equal to PP=1."""
import pytest

from tests.launch import run_torchrun
from tests.workers.models_report import parse_checks

TOL = 1e-4


@pytest.fixture(scope="module")
def checks(tmp_path_factory):
    return parse_checks(run_torchrun("tests.workers.models_pp", 2, str(tmp_path_factory.mktemp("pp")), timeout=300))


@pytest.mark.parametrize("name", ["llama", "qwen3", "llama_tied"])
def test_pp2_logits_and_export(checks, name):
    assert checks[f"{name}_pp2_logits"] <= TOL
    assert checks[f"{name}_pp2_export_bits"] == 0
    assert checks[f"{name}_pp2_export_reload"] <= TOL


def test_encoder_export_from_first_stage(checks):
    assert checks["pp2_encoder_export_files"] == 2  # config.json + model.safetensors


def test_schedule_pp2_equals_pp1(checks):
    assert checks["schedule_pp2_num_losses"] == 2
    assert checks["schedule_pp2_loss_vs_pp1"] <= TOL
    assert checks["schedule_pp2_encoder_grad_vs_pp1"] <= TOL
    assert checks["schedule_pp2_encoder_grad_norm"] > 0
