"""GPU checks with thresholds (`pytest -m gpu`; skipped without a CUDA GPU): the model layer
against transformers in float32, attention backends against each other, compiled vs eager
kernels, and packed window training against the per-window loop in bf16 on the default
backend and on Transformer Engine layers where TE imports."""
import pytest
import torch

from tests.launch import run_torchrun
from tests.workers.models_report import parse_checks

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]
FAMILIES = ("llama", "qwen3")


@pytest.fixture(scope="module")
def checks(tmp_path_factory):
    return parse_checks(run_torchrun("tests.workers.models_gpu", 1, str(tmp_path_factory.mktemp("gpu")), timeout=900))


@pytest.mark.parametrize("fam", FAMILIES)
def test_float32_parity_with_transformers(checks, fam):
    assert checks[f"gpu_{fam}_logits"] <= 1e-4
    assert checks[f"gpu_{fam}_encoder"] <= 1e-4
    assert checks[f"gpu_{fam}_params_on_cuda"] == 1


def test_bf16_splice_close_to_fp32(checks):
    assert checks["gpu_bf16_vs_fp32_splice_loss_rel"] <= 2e-2
    assert checks["gpu_bf16_grad_finite"] == 1


def test_compiled_kernels_equal_eager(checks):
    assert checks["gpu_compiled_vs_eager_loss_rel"] <= 1e-5
    assert checks["gpu_compiled_vs_eager_grad_rel"] <= 1e-4


def test_flash_pinned_equals_sdpa_on_causal_rows(checks):
    assert checks["gpu_flash_vs_sdpa_bf16_logits"] <= 3e-2


@pytest.mark.parametrize("backend", ["flex", "unfused"])
def test_document_mask_backends_agree_forward_and_backward(checks, backend):
    assert checks[f"gpu_packed_{backend}_vs_sdpa_out"] <= 1e-4
    assert checks[f"gpu_packed_{backend}_vs_sdpa_grad_rel"] <= 1e-3


@pytest.mark.parametrize("fam", FAMILIES)
def test_packed_window_equals_loop_in_bf16_on_default_backend(checks, fam):
    assert checks[f"gpu_default_{fam}_window_packed_vs_loop_loss_rel"] <= 2e-3
    assert checks[f"gpu_default_{fam}_window_packed_vs_loop_grad_cos"] >= 0.999


@pytest.mark.parametrize("fam", FAMILIES)
def test_packed_window_equals_loop_on_transformer_engine_layers(checks, fam):
    if checks["gpu_te_importable"] != 1:
        pytest.skip("transformer_engine does not import on this machine")
    assert checks["gpu_te_layers_in_use"] == 1
    # A block mask that reached TE's causal attention would leak labels: the loss would collapse.
    assert checks[f"gpu_te_{fam}_window_packed_vs_loop_loss_rel"] <= 2e-3
    assert checks[f"gpu_te_{fam}_window_packed_vs_loop_grad_cos"] >= 0.999
