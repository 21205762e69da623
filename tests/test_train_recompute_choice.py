"""The seed's --gradient_checkpointing: the cheapest recompute choice whose estimate fits the
longest sample the length limits allow, on the real model shapes."""
import pytest

from acerag_megatron.models.arch import ModelArch
from acerag_megatron.training.arguments import parse_args
from acerag_megatron.training.benchmark import SHAPES
from acerag_megatron.training.memory_estimate import FIT_LADDER, estimate_memory
from acerag_megatron.training.recompute_choice import HEADROOM, choose_recompute, fit_ladder, longest_micro_batch

H200_GIB, H100_GIB = 139.8, 79.6
# The seed's Llama-2 pretraining command (stage 1), as examples/llama2/pretrain.sh passes it.
SEED_PRETRAIN = ["--language_model_name_or_path", "meta-llama/Llama-2-7b-chat-hf", "--window_mode", "True",
                 "--min_length", "1024", "--max_length", "16000", "--encoder_num_hidden_layers", "8",
                 "--window", "1024", "--encoder_max_length", "4096", "--comp_candidates", "1", "2", "4", "8",
                 "--pretraining_down_scaling_method", "random", "--data_files", "redpajama.json",
                 "--output_dir", "out", "--gradient_checkpointing", "--learning_rate", "5e-5",
                 "--per_device_train_batch_size", "1"]


def _with(argv, flag, *values):
    """argv with the values of `flag` (up to the next flag) replaced."""
    i = argv.index(flag) + 1
    j = next((k for k in range(i, len(argv)) if argv[k].startswith("--")), len(argv))
    return argv[:i] + list(values) + argv[j:]


def _estimate_for(args, arch, shape, dp=8):
    def estimate(lm, enc):
        return estimate_memory(arch, arch, args.encoder_num_hidden_layers, shape.lm_tokens, shape.enc_tokens,
                               shape.predicted, dp=dp, recompute_lm=lm, recompute_encoder=enc)
    return estimate


def test_bare_flag_defers_to_the_estimate_and_explicit_flags_win():
    assert parse_args(SEED_PRETRAIN).recompute_by_estimate
    explicit = parse_args(SEED_PRETRAIN + ["--recompute_lm", "fc1"])
    assert not explicit.recompute_by_estimate and explicit.recompute_lm == "fc1"
    assert not parse_args(SEED_PRETRAIN[:-5] + ["--per_device_train_batch_size", "1"]).recompute_by_estimate


def test_longest_window_sample_at_the_smallest_ratio():
    args = parse_args(SEED_PRETRAIN)
    shape = longest_micro_batch(args)
    # 15,999 tokens in 16 windows; ratio 1 keeps every token of windows 0..14 as a compressed
    # state: 15 x 1024 states + the 15 predicted windows 1..15 (14,975 tokens).
    assert shape.lm_tokens == 15 * 1024 + (15999 - 1024)
    assert shape.predicted <= 15999 - 1024 and shape.predicted > 14000
    assert shape.enc_tokens >= 15 * 1024
    ratio8 = longest_micro_batch(parse_args(_with(SEED_PRETRAIN, "--comp_candidates", "8")))
    assert ratio8.lm_tokens == 15 * 128 + (15999 - 1024)
    packed = longest_micro_batch(parse_args(SEED_PRETRAIN + ["--max_tokens_per_micro_batch", "40000"]))
    assert packed.lm_tokens == packed.enc_tokens == 40000
    assert longest_micro_batch(parse_args(SEED_PRETRAIN + ["--max_tokens_per_micro_batch", "8000"])) == shape


@pytest.mark.parametrize("capacity,te_layers,dp", [(H200_GIB, False, 8), (H200_GIB, True, 8), (H200_GIB, False, 1),
                                                   (H200_GIB, True, 1), (H100_GIB, False, 8)])
def test_the_choice_is_the_cheapest_rung_that_fits(capacity, te_layers, dp):
    args = parse_args(SEED_PRETRAIN)
    arch = ModelArch.from_config_dict(dict(SHAPES["llama2-7b"]), source="llama2-7b")
    estimate = _estimate_for(args, arch, longest_micro_batch(args), dp)
    choice, why = choose_recompute(estimate, capacity, te_layers)
    ladder = fit_ladder(te_layers)
    assert choice in ladder
    assert estimate(*choice).total <= HEADROOM * capacity and f"of {capacity:.1f} GiB" in why
    for cheaper in ladder[:ladder.index(choice)]:
        assert estimate(*cheaper).total > HEADROOM * capacity
    if te_layers:
        assert all("fc1" not in rung for rung in ladder)


def test_the_seed_run_on_h200s_no_longer_pays_full_recompute():
    args = parse_args(SEED_PRETRAIN)
    arch = ModelArch.from_config_dict(dict(SHAPES["llama2-7b"]), source="llama2-7b")
    for dp in (1, 8):
        choice, _ = choose_recompute(_estimate_for(args, arch, longest_micro_batch(args), dp), H200_GIB, False)
        assert choice != ("full", "full")


def test_nothing_fits_falls_back_to_full_recompute_and_says_so():
    args = parse_args(SEED_PRETRAIN)
    arch = ModelArch.from_config_dict(dict(SHAPES["llama2-7b"]), source="llama2-7b")
    choice, why = choose_recompute(_estimate_for(args, arch, longest_micro_batch(args)), 16.0, False)
    assert choice == ("full", "full") and "may not fit" in why
    assert FIT_LADDER[-1] == ("full", "full")


def test_finetune_bound_covers_padded_and_packed_rows():
    ft = SEED_PRETRAIN[:2] + ["--window_mode", "False", "--lm_max_length", "4096", "--max_length", "32000",
                              "--encoder_name_or_path", "x", "--data_files", "a.json", "--output_dir", "o",
                              "--comp_candidates", "2", "4", "8", "--per_device_train_batch_size", "2"]
    shape = longest_micro_batch(parse_args(ft))
    assert shape.lm_tokens == 2 * 4096 and shape.enc_tokens == 2 * min(32000, 8 * 4096)
    packed = longest_micro_batch(parse_args(ft + ["--max_tokens_per_micro_batch", "12000"]))
    assert packed.lm_tokens == 12000 and packed.enc_tokens == 2 * min(32000, 8 * 4096)


def test_trainer_prints_the_resolved_choice(assets, tmp_path):
    from tests.launch import run_torchrun

    out = run_torchrun("acerag_megatron.train_compressive_encoder", 1,
                       "--language_model_name_or_path", assets["llama"], "--window_mode", "True", "--min_length", "256",
                       "--max_length", "4000", "--encoder_num_hidden_layers", "2", "--window", "128",
                       "--encoder_max_length", "512", "--data_files", assets["files"]["redpajama"],
                       "--output_dir", str(tmp_path / "run"), "--max_steps", "1", "--save_strategy", "no",
                       "--gradient_checkpointing")
    # Tiny models fit host memory without recompute; the line names the longest micro-batch.
    assert "--gradient_checkpointing -> --recompute_encoder none --recompute_lm none (longest micro-batch " in out
    assert "GiB (host memory)" in out
