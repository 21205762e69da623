"""Every command is an installed console script; tools/*.py and checkpoints_convert/*.py also run as
files from any folder; each command takes both spellings of its long options (`--a_b`, `--a-b`)."""
import os
import subprocess
import sys
import sysconfig
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from acerag_megatron.cli.spellings import ToolParser, other_spelling

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = {  # console script -> the file that runs the same main
    "acerag-preprocess-data": "tools/preprocess_data.py",
    "acerag-inspect-data": "tools/inspect_data.py",
    "acerag-evaluate": "tools/evaluate.py",
    "acerag-latency-benchmark": "tools/latency_benchmark.py",
    "acerag-benchmark": "tools/benchmark.py",
    "acerag-hf-to-megatron": "checkpoints_convert/hf_to_megatron.py",
    "acerag-megatron-to-hf": "checkpoints_convert/megatron_to_hf.py",
    "acerag-verify-checkpoint": "checkpoints_convert/verify.py",
}


def _help(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    # No PYTHONPATH: the commands must find the package as installed, not through the checkout.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([*command, "--help"], cwd=cwd, env={**env, "HF_HUB_OFFLINE": "1"}, capture_output=True,
                          text=True, timeout=240)


def test_every_command_and_file_runs_help_from_elsewhere(tmp_path):
    bin_dir = Path(sysconfig.get_path("scripts"))
    missing = [name for name in SCRIPTS if not (bin_dir / name).is_file()]
    assert not missing, f"not installed (pip install -e .): {missing}"
    commands = [[str(bin_dir / name)] for name in SCRIPTS] + [[sys.executable, str(ROOT / f)] for f in SCRIPTS.values()]
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda c: _help(c, tmp_path), commands))
    for command, r in zip(commands, results):
        assert r.returncode == 0 and r.stdout.startswith("usage:"), (command, r.stderr[-2000:])
    for f in SCRIPTS.values():
        assert "sys.path" not in (ROOT / f).read_text(), f


def test_other_spelling():
    assert other_spelling("--output-prefix") == "--output_prefix"
    assert other_spelling("--data_files") == "--data-files"
    assert other_spelling("--lm") is None and other_spelling("-h") is None and other_spelling("--a_b-c") is None


def test_tool_parser_shows_one_spelling_and_keeps_abbreviations():
    p = ToolParser(prog="x")
    p.add_argument("--output-prefix", required=True)
    p.add_argument_group("more").add_argument("--no_progress", action="store_true")
    assert vars(p.parse_args(["--output_prefix", "a", "--no-progress"])) == {"output_prefix": "a",
                                                                              "no_progress": True}
    # A prefix of both spellings of one option is that option, as it was with one spelling.
    assert p.parse_args(["--output", "b"]).output_prefix == "b"
    shown = p.format_help()
    assert "--output-prefix" in shown and "--output_prefix" not in shown and "--no-progress" not in shown


def test_preprocess_data_other_spelling(tmp_path, capsys):
    from acerag_megatron.cli.preprocess_data import main

    rc = main(["--input", str(tmp_path / "missing.json"), "--tokenizer", str(tmp_path), "--output_prefix",
               str(tmp_path / "out"), "--mode", "pretrain", "--no_progress", "--allow_empty"])
    assert rc == 2 and "missing.json: no such input file" in capsys.readouterr().err


def test_inspect_data_other_spelling(tmp_path, capsys):
    from acerag_megatron.cli.inspect_data import main

    rc = main([str(tmp_path / "nothing"), "--encoder_max_length", "64", "--lm_max_length", "64",
               "--comp_candidates", "2"])
    assert rc == 2 and capsys.readouterr().err.startswith("error: ")


def test_evaluate_other_spelling():
    from acerag_megatron.cli.evaluate import parse_args

    cfg, progress = parse_args(["--lm", "m", "--encoder", "e", "--data", "d.json", "--dataset", "nq", "--output",
                                "o.jsonl", "--comp-ratio", "4", "--batch-size", "2", "--down-scaling-method",
                                "random", "--no-progress"])
    assert (cfg.comp_ratio, cfg.batch_size, cfg.down_scaling_method, progress) == (4, 2, "random", False)


def test_latency_benchmark_other_spelling(capsys):
    from acerag_megatron.cli.latency_benchmark import main

    with pytest.raises(SystemExit):  # parsed, then stopped by the missing --encoder
        main(["--batch-size", "2", "--context-tokens", "64", "--lm", "m"])
    assert "--encoder is required with --lm" in capsys.readouterr().err


def test_benchmark_other_spelling():
    from acerag_megatron.cli.benchmark import main

    # Parsed, then refused before any model is built: a fixed-shape option with a workload.
    with pytest.raises(SystemExit, match="^error: --profile-steps/--seq-len: fixed-shape options"):
        main(["--length_dist", "redpajama", "--profile_steps", "1"])


@pytest.mark.parametrize("module,argv,needle", [
    ("hf_to_megatron", ["--hf_path", "{tmp}/nothing", "--output", "{tmp}/o", "--num_layers", "2"],
     "--hf-path {tmp}/nothing: no such folder"),
    ("megatron_to_hf", ["--megatron_path", "{tmp}/nothing", "--output", "{tmp}/o", "--hf_config_from", "{tmp}"],
     "--megatron-path"),
    ("verify", ["--hf_path", "{tmp}", "--megatron_path", "{tmp}/nothing", "--seq_length", "4"], "--megatron-path"),
])
def test_converters_other_spelling(tmp_path, module, argv, needle):
    from importlib import import_module

    main = import_module(f"checkpoints_convert.{module}").main
    with pytest.raises(SystemExit) as stopped:
        main([a.format(tmp=tmp_path) for a in argv])
    message = str(stopped.value.code)
    assert message.startswith("error: " + needle.format(tmp=tmp_path)) and "required" not in message, message
