"""Static parts of the memory estimate (activations are checked against real saved bytes in
tests/workers/models_single.py)."""
import pytest

from acerag_megatron.models.arch import ModelArch
from acerag_megatron.training.benchmark import SHAPES
from acerag_megatron.training.memory_estimate import GIB, estimate_memory, layer_saved_values, model_params


def _arch(name):
    return ModelArch.from_config_dict(dict(SHAPES[name]), source=name)


def test_parameter_counts_of_the_real_models():
    llama = _arch("llama2-7b")
    norms = 32 * 2 * 4096 + 4096  # RMSNorm weights are left out of the count
    assert model_params(llama, 32, with_head=True) == 6_738_415_616 - norms
    assert model_params(_arch("qwen3-8b"), 36, with_head=True) == pytest.approx(8.19e9, rel=0.01)


def test_static_memory_and_sharding():
    llama = _arch("llama2-7b")
    one = estimate_memory(llama, llama, 8, 0, 0, 0, dp=1)
    eight = estimate_memory(llama, llama, 8, 0, 0, 0, dp=8)
    enc_params = model_params(llama, 8, with_head=False)
    assert one.encoder_weights == pytest.approx(enc_params * 2 / GIB)
    assert one.encoder_grads == pytest.approx(enc_params * 4 / GIB)  # float32 gradient buffer
    assert one.optimizer_state == pytest.approx(enc_params * 12 / GIB)  # main params + 2 moments
    assert eight.optimizer_state == pytest.approx(one.optimizer_state / 8)
    assert estimate_memory(llama, llama, 8, 0, 0, 0, dp=8, distributed_optimizer=False).optimizer_state \
        == pytest.approx(one.optimizer_state)
    tp2 = estimate_memory(llama, llama, 8, 0, 0, 0, tp=2)
    assert tp2.lm_weights == pytest.approx(one.lm_weights / 2)


def test_activation_counts_shrink_with_recompute_and_parallelism():
    llama = _arch("llama2-7b")
    h, ffn = 4096, 11008
    assert layer_saved_values(llama, trainable=False) == 6 * h + 2 * ffn
    assert layer_saved_values(llama, trainable=True) == 9 * h + 3 * ffn
    assert layer_saved_values(llama, trainable=False, recompute="mlp") == 7 * h
    assert layer_saved_values(llama, trainable=False, recompute="full") == h
    assert layer_saved_values(llama, trainable=False, tp=2, sequence_parallel=True) == (6 * h + 2 * ffn) / 2


def test_fit_advice_walks_the_recompute_ladder():
    from acerag_megatron.training.memory_estimate import fit_advice

    llama = _arch("llama2-7b")

    def estimate_for(lm, enc):  # the 8192-token window sample on one GPU: 81 / 74 / 63 / 47 GiB
        return estimate_memory(llama, llama, 8, 10880, 8192, 7168, recompute_lm=lm, recompute_encoder=enc)

    assert "--recompute_encoder full --recompute_lm fc1" in fit_advice(estimate_for, 79.6, ("none", "none"))
    assert "--recompute_encoder full --recompute_lm none" in fit_advice(estimate_for, 139.8 * 0.6, ("none", "none"))
    assert "--recompute_encoder full --recompute_lm full" in fit_advice(estimate_for, 60, ("fc1", "full"))
    assert "data parallelism" in fit_advice(estimate_for, 40, ("none", "none"))
    assert "fits" in fit_advice(estimate_for, 139.8, ("none", "none"))


def test_fc1_recompute_saves_what_mlp_recompute_saves_in_the_frozen_lm():
    llama = _arch("llama2-7b")
    assert layer_saved_values(llama, False, recompute="fc1") == layer_saved_values(llama, False, recompute="mlp")
    # The trainable encoder keeps its fc2 input under fc1 recompute.
    assert layer_saved_values(llama, True, recompute="fc1") == layer_saved_values(llama, True, recompute="mlp") + 11008
