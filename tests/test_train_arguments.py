"""The six launch scripts (the seed's commands) parse with their flags and chain stages."""
import os
import shlex
import subprocess
from pathlib import Path

import pytest

from acerag_megatron.training.arguments import (TrainArguments, build_parser, deepspeed_zero_stage, notes_for,
                                                parse_args, save_steps_interval)

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = sorted((ROOT / "examples").glob("*/*.sh"))


def _command_of(script: Path, tmp_path: Path) -> list[str]:
    """Run a launch script with `echo` as torchrun and return the trainer's argv."""
    for stage in ("pretrain/acerag-llama2-pretrain", "pretrain/acerag-qwen3-pretrain",
                  "ft/acerag-llama2-longalpaca", "ft/acerag-qwen3-longalpaca"):
        for step in (5, 10):  # version sort must pick checkpoint-10, not checkpoint-5
            (tmp_path / stage / f"checkpoint-{step}").mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "TORCHRUN": "echo", "OUTPUT_ROOT": str(tmp_path), "GPUS_PER_NODE": "8"}
    out = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, check=True).stdout
    line = [ln for ln in out.splitlines() if "acerag_megatron.train_compressive_encoder" in ln][0]
    argv = shlex.split(line)
    return argv[argv.index("acerag_megatron.train_compressive_encoder") + 1:]


def test_six_scripts_exist():
    names = {f"{p.parent.name}/{p.name}" for p in SCRIPTS}
    assert names == {f"{m}/{s}.sh" for m in ("llama2", "qwen3")
                     for s in ("pretrain", "finetune_longalpaca", "finetune_multitask")}


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_launch_script_parses(script, tmp_path):
    args = parse_args(_command_of(script, tmp_path))
    assert args.encoder_num_hidden_layers == 8 and args.comp_candidates == [1, 2, 4, 8]
    assert args.recompute == "full" and args.use_distributed_optimizer  # gradient_checkpointing, ZeRO-2
    if script.stem == "pretrain":
        assert args.window_mode and args.window == 1024 and args.pretraining_down_scaling_method == "random"
        assert args.learning_rate == 5e-5 and args.encoder_name_or_path == args.language_model_name_or_path
    else:
        assert not args.window_mode and args.stage == "ft" and args.down_scaling_method == "random"
        assert args.encoder_name_or_path.endswith("checkpoint-10/compressive_encoder")
        assert args.learning_rate == 1e-5 and args.lm_max_length == 4096 and args.max_length == 32000
    if script.stem == "finetune_multitask":
        assert len(args.data_files) == 8 and args.data_splits == [0.1, 0.1, 1.0, 1.0, 0.1, 0.1, 0.1, 0.1]
        assert args.train_num_per_data == 50000
    if script.parent.name == "qwen3" and script.stem == "pretrain":
        assert args.save_strategy == "steps" and save_steps_interval(args.save_steps, 1000) == 250


def test_appended_flags_override(tmp_path):
    argv = _command_of(ROOT / "examples/llama2/pretrain.sh", tmp_path) + [
        "--window", "64", "--tensor_model_parallel_size", "2", "--sequence_parallel"]
    args = parse_args(argv)
    assert args.window == 64 and args.tensor_model_parallel_size == 2 and args.sequence_parallel


def test_boolean_spellings_and_notes(tmp_path):
    ds = tmp_path / "ds.json"
    ds.write_text('{"zero_optimization": {"stage": 0}}')
    base = ["--language_model_name_or_path", "m", "--data_files", "a.json", "--output_dir", "o"]
    a = parse_args(base + ["--window_mode", "false", "--use_safetensors", "True", "--deepspeed", str(ds)])
    assert not a.window_mode and a.use_safetensors and not a.use_distributed_optimizer
    assert any("ZeRO stage 0" in n for n in notes_for(a))
    with pytest.raises(SystemExit):
        parse_args(base + ["--window_mode", "maybe"])
    with pytest.raises(SystemExit, match="must be 1 in window mode"):
        parse_args(base + ["--window_mode", "True", "--per_device_train_batch_size", "2"])
    bad = tmp_path / "bad.json"
    bad.write_text("{\n  oops")
    with pytest.raises(SystemExit, match=r"bad.json:2"):
        deepspeed_zero_stage(str(bad))


def test_every_field_is_a_flag():
    import dataclasses
    flags = {a.dest for a in build_parser()._actions if a.dest != "help"}
    assert flags == {f.name for f in dataclasses.fields(TrainArguments)}


def test_fractional_save_steps():
    assert save_steps_interval(0.249999, 11250) == 2813
    assert save_steps_interval(0.249999, 4) == 1
    assert save_steps_interval(500, 11250) == 500


def test_recompute_specs():
    base = ["--language_model_name_or_path", "m", "--data_files", "a.json", "--output_dir", "o"]
    a = parse_args(base + ["--recompute_encoder", "full", "--recompute_lm", "mlp,core_attn"])
    assert (a.recompute, a.recompute_encoder, a.recompute_lm) == ("none", "full", "mlp,core_attn")
    assert parse_args(base + ["--gradient_checkpointing"]).recompute == "full"
    with pytest.raises(SystemExit, match="--recompute_lm: .*'mlp,attention'"):
        parse_args(base + ["--recompute_lm", "mlp,attention"])


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_seed_spellings_parse_as_hf_argument_parser_does(script, tmp_path):
    from transformers import HfArgumentParser

    parser = build_parser()
    assert isinstance(parser, HfArgumentParser)
    argv = _command_of(script, tmp_path)
    (plain,) = HfArgumentParser(TrainArguments).parse_args_into_dataclasses(argv, look_for_args_file=False)
    assert vars(parse_args(argv)) == vars(plain)


def test_hf_semantics_choices_switches_lists():
    base = ["--language_model_name_or_path", "m", "--data_files", "a.json", "b.json", "--output_dir", "o"]
    a = parse_args(base + ["--window_mode", "--bf16", "--overlap_grad_reduce", "false", "--comp_candidates", "4"])
    assert a.window_mode and a.bf16 is True and a.overlap_grad_reduce is False and a.fused_optimizer is None
    assert a.data_files == ["a.json", "b.json"] and a.comp_candidates == [4]
    assert "--save_strategy {epoch,steps,no}" in build_parser().format_help()
    with pytest.raises(SystemExit, match=r"^error: --save_strategy: invalid choice: 'weekly'"):
        parse_args(base + ["--save_strategy", "weekly"])
    with pytest.raises(SystemExit, match=r"^error: unrecognized arguments: --nonsense 1$"):
        parse_args(base + ["--nonsense", "1"])


def test_hyphen_spellings_are_the_same_flags():
    underscores = parse_args(["--language_model_name_or_path", "m", "--data_files", "a.json", "--output_dir", "o",
                              "--per_device_train_batch_size", "2", "--gradient_checkpointing"])
    hyphens = parse_args(["--language-model-name-or-path", "m", "--data-files", "a.json", "--output-dir", "o",
                          "--per-device-train-batch-size", "2", "--gradient-checkpointing"])
    assert vars(hyphens) == vars(underscores)
    shown = build_parser().format_help()
    assert "--data_files" in shown and "--data-files" not in shown  # one spelling documented
    with pytest.raises(SystemExit, match=r"^error: --logging_steps: invalid int value: 'x'$"):
        parse_args(["--language-model-name-or-path", "m", "--data-files", "a.json", "--output-dir", "o",
                    "--logging-steps", "x"])
