"""Single-rank model checks against transformers (run in a torchrun child: the CPU patches stay
out of the pytest process)."""
import pytest

from tests.launch import run_torchrun
from tests.workers.models_report import parse_checks

TOL = 1e-4


@pytest.fixture(scope="module")
def checks(tmp_path_factory):
    return parse_checks(run_torchrun("tests.workers.models_single", 1, str(tmp_path_factory.mktemp("single")),
                                     timeout=240))


@pytest.mark.parametrize("fam", ["llama", "qwen3"])
def test_logits_and_encoder_match_transformers(checks, fam):
    assert checks[f"{fam}_tp1_logits"] <= TOL
    assert checks[f"{fam}_tp1_encoder"] <= TOL


@pytest.mark.parametrize("fam", ["llama", "qwen3"])
def test_explicit_positions(checks, fam):
    assert checks[f"{fam}_explicit_vs_default_positions"] <= 1e-6
    assert checks[f"{fam}_packed_vs_separate"] <= TOL


@pytest.mark.parametrize("fam", ["llama", "qwen3"])
def test_export_round_trip_is_bit_exact(checks, fam):
    assert checks[f"{fam}_lm_roundtrip_bits"] == 0
    assert checks[f"{fam}_encoder_export_bits"] == 0
    assert checks[f"{fam}_encoder_export_reload"] <= TOL


def test_splice_matches_transformers_and_only_encoder_gets_grads(checks):
    assert checks["splice_loss_vs_hf"] <= TOL
    assert checks["tied_splice_loss_vs_hf"] <= TOL
    assert checks["splice_ignored_loss_abs"] == 0
    assert checks["lm_params_with_grad"] == 0
    assert checks["encoder_params_without_grad"] == 0
    assert checks["encoder_embed_grad_vs_hf"] <= TOL
    assert checks["encoder_norm_grad_vs_hf"] <= TOL
    assert checks["no_splice_vs_plain_lm"] <= 1e-6
    assert checks["no_splice_encoder_params_without_grad"] == 0 and checks["no_splice_encoder_grad_abs"] == 0


def test_device_seam_on_cpu(checks):
    assert checks["device_cpu_gloo_sdpa"] == 1
    assert checks["device_describe_has_version"] == 1
    assert checks["device_gpu_backends_refused_on_cpu"] == 4
    assert checks["device_unfused_allowed"] == 1


def test_export_above_shard_size_writes_index(checks):
    assert checks["sharded_export_files"] > 1
    assert checks["sharded_export_has_index"] == 1
    assert checks["sharded_export_reload"] <= TOL


def test_attention_backends_agree(checks):
    for backend in ("flex", "unfused"):
        assert checks[f"{backend}_vs_sdpa"] <= TOL
    for backend in ("sdpa", "flex", "unfused"):
        assert checks[f"{backend}_left_pad_finite"] == 1
        assert checks[f"{backend}_refilled_mask_vs_causal"] <= TOL
        assert checks[f"{backend}_packed_spec_vs_dense"] <= TOL
        assert checks[f"{backend}_left_pad_real_rows_vs_sdpa_causal"] <= TOL


@pytest.mark.parametrize("name", ["selective", "full", "mlp_core_attn", "lm_mlp", "encoder_full", "lm_fc1", "fc1"])
def test_recompute_modes_match(checks, name):
    assert checks[f"recompute_{name}_loss"] <= 1e-6
    assert checks[f"recompute_{name}_grad"] <= 1e-6


@pytest.mark.parametrize("name, lm, encoder", [("none", 1, 1), ("selective", 1, 1), ("full", 2, 2),
                                               ("mlp_core_attn", 2, 2), ("lm_mlp", 2, 1),
                                               ("encoder_full", 1, 2), ("lm_fc1", 1, 1)])
def test_recompute_reaches_the_chosen_model(checks, name, lm, encoder):
    """Forward runs of the first layer's MLP in one forward+backward: 2 where it is recomputed."""
    assert checks[f"recompute_{name}_lm_mlp_forwards"] == lm
    assert checks[f"recompute_{name}_encoder_mlp_forwards"] == encoder


@pytest.mark.parametrize("name, fc1, fc2", [("none", 1, 1), ("lm_mlp", 2, 2), ("lm_fc1", 2, 1)])
def test_fc1_recompute_reruns_fc1_only(checks, name, fc1, fc2):
    assert checks[f"recompute_{name}_lm_fc1_forwards"] == fc1
    assert checks[f"recompute_{name}_lm_fc2_forwards"] == fc2


def test_compiled_kernels_match_eager(checks):
    assert checks["eager_uses_compiled_swiglu"] == 0 and checks["compiled_uses_compiled_swiglu"] == 1
    assert checks["compiled_kernels_loss"] <= 1e-6
    assert checks["compiled_kernels_grad_rel"] <= 1e-5  # fused reductions sum in another order


@pytest.mark.parametrize("role", ["lm", "encoder"])
def test_layers_save_only_what_backward_needs(checks, role):
    """A frozen layer keeps no linear inputs and V does not pin the fused QKV output."""
    excess = checks[f"saved_{role}_excess_floats_per_token"]
    assert 0 <= excess <= checks[f"saved_{role}_slack_floats_per_token"]


@pytest.mark.parametrize("fam", ["llama", "qwen3"])
@pytest.mark.parametrize("recompute", ["none", "mlp", "full", "core_attn", "fc1"])
def test_memory_estimate_counts_what_the_model_saves(checks, fam, recompute):
    """training/memory_estimate.py's activation bytes equal the bytes a whole forward saves for
    its backward, up to per-token scalars (norm scales, softmax statistics, RoPE angles)."""
    excess = checks[f"estimate_{fam}_{recompute}_excess_bytes"]
    assert abs(excess) <= checks[f"estimate_{fam}_{recompute}_slack_bytes"]


def test_single_process_without_torchrun():
    """initialize_parallel makes its own 1-rank gloo group when no torchrun environment is set."""
    import os
    import subprocess
    import sys

    from tests.launch import ROOT

    code = ("from acerag_megatron.device import resolve_device\n"
            "from acerag_megatron.parallel import initialize_parallel, destroy_parallel\n"
            "import torch.distributed as dist\n"
            "from acerag_megatron.process_setup import prepare_process\n"
            "device = resolve_device()\n"
            "prepare_process(device)\n"
            "initialize_parallel(1, 1, 0, device)\n"
            "print('world', dist.get_world_size(), dist.get_backend())\n"
            "destroy_parallel(process_group=True)\n")
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**env, "PYTHONPATH": str(ROOT)},
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "world 1 gloo" in out.stdout
