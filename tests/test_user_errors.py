"""Every user mistake ends with one `error: <flag or file>: <cause>` line,
no traceback and a non-zero exit, also under torchrun with 2 ranks (rank 0 prints, the others
exit silently).

The command lines run as users run them (a process each, or torchrun) for the cases that differ
in how they are launched; the others call the same main(argv) one after another in one process
(a few seconds of start-up each would otherwise add up to minutes).
"""
import json
import shutil

import pytest

from tests.cli_errors import assert_one_error, run_all, run_in_one_process

TRAINER_MODULE = "acerag_megatron.train_compressive_encoder"
TRAINER = ["-m", TRAINER_MODULE]
H2M, M2H, VERIFY = (["-m", f"checkpoints_convert.{c}"] for c in ("hf_to_megatron", "megatron_to_hf", "verify"))
EVALUATE = ["tools/evaluate.py"]
IN_ONE_PROCESS = 0
"""nproc value of a case whose main(argv) runs in the shared process."""


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    from acerag_megatron.tiny.models import make_tiny_hf_model

    root = tmp_path_factory.mktemp("user_errors")
    made = {"llama": make_tiny_hf_model("llama", root / "llama", 97, num_layers=4, seed=1),
            "qwen3": make_tiny_hf_model("qwen3", root / "qwen3", 97, num_layers=4, seed=2),
            "narrow": make_tiny_hf_model("llama", root / "narrow", 97, hidden_size=32, num_layers=4, seed=3),
            "kv1": make_tiny_hf_model("llama", root / "kv1", 97, num_layers=2, kv_heads=1, seed=4)}
    made["bad_weights"] = root / "bad_weights"
    made["bad_weights"].mkdir()
    shutil.copy(made["llama"] / "config.json", made["bad_weights"])
    data = (made["llama"] / "model.safetensors").read_bytes()
    (made["bad_weights"] / "model.safetensors").write_bytes(data[: len(data) // 2])  # a cut-off download
    made["bad_config"] = root / "bad_config"
    shutil.copytree(made["llama"], made["bad_config"])
    (made["bad_config"] / "config.json").write_text('{"model_type": "llama",')
    made["file"] = root / "notes.txt"
    made["file"].write_text("a file, not a folder")
    made["data"] = root / "data.jsonl"
    made["data"].write_text(json.dumps({"text": "hello"}) + "\n")
    made["kv1_ckpt"], made["bad_ckpt"] = root / "kv1_ckpt", root / "bad_ckpt"
    made["out"] = root / "out"
    return made


def _trainer(f, *extra):
    return ["--language_model_name_or_path", str(f["llama"]), "--data_files", str(f["data"]),
            "--output_dir", str(f["out"] / "run"), "--encoder_num_hidden_layers", "2", *extra]


def _cases(f):
    s = {k: str(v) for k, v in f.items()}
    return {
        # launched for real: a plain process
        "comp_candidates_0": (TRAINER, _trainer(f, "--comp_candidates", "0"), None),
        "h2m_bad_weights": (H2M, ["--hf-path", s["bad_weights"], "--output", f"{s['out']}/c"], None),
        "h2m_world_size": (H2M, ["--hf-path", s["llama"], "--output", f"{s['out']}/d", "--tp", "2"], None),
        "evaluate_other_family": (EVALUATE, ["--lm", s["llama"], "--encoder", s["qwen3"], "--data", s["data"],
                                             "--dataset", "nq", "--output", f"{s['out']}/p.jsonl"], None),
        # launched for real: torchrun with 2 ranks
        "trainer_tp_1_kv_head": (TRAINER, _trainer(f, "--language_model_name_or_path", s["kv1"],
                                                   "--tensor_model_parallel_size", "2"), 2),
        "trainer_world_size": (TRAINER, _trainer(f, "--pipeline_model_parallel_size", "4"), 2),
        "verify_tp_1_kv_head": (VERIFY, ["--hf-path", s["kv1"], "--megatron-path", s["kv1_ckpt"], "--tp", "2"], 2),
        # main(argv) in one process
        "comp_candidates_negative": (TRAINER, _trainer(f, "--comp_candidates", "2", "-4"), IN_ONE_PROCESS),
        "batch_size_0": (TRAINER, _trainer(f, "--per_device_train_batch_size", "0"), IN_ONE_PROCESS),
        "logging_steps_0": (TRAINER, _trainer(f, "--logging_steps", "0"), IN_ONE_PROCESS),
        "logging_steps_text": (TRAINER, _trainer(f, "--logging_steps", "ten"), IN_ONE_PROCESS),
        "output_dir_under_file": (TRAINER, _trainer(f, "--output_dir", f"{s['file']}/run"), IN_ONE_PROCESS),
        "encoder_too_deep": (TRAINER, _trainer(f, "--encoder_num_hidden_layers", "9"), IN_ONE_PROCESS),
        "lm_missing": (TRAINER, _trainer(f, "--language_model_name_or_path", f"{s['out']}/nothing"), IN_ONE_PROCESS),
        "lm_bad_weights": (TRAINER, _trainer(f, "--language_model_name_or_path", s["bad_weights"]), IN_ONE_PROCESS),
        "lm_bad_config": (TRAINER, _trainer(f, "--language_model_name_or_path", s["bad_config"]), IN_ONE_PROCESS),
        "encoder_other_family": (TRAINER, _trainer(f, "--encoder_name_or_path", s["qwen3"]), IN_ONE_PROCESS),
        "encoder_other_hidden": (TRAINER, _trainer(f, "--encoder_name_or_path", s["narrow"]), IN_ONE_PROCESS),
        "h2m_num_layers": (H2M, ["--hf-path", s["llama"], "--output", f"{s['out']}/a", "--num-layers", "5"],
                           IN_ONE_PROCESS),
        "h2m_missing": (H2M, ["--hf-path", f"{s['out']}/nothing", "--output", f"{s['out']}/b"], IN_ONE_PROCESS),
        "m2h_missing": (M2H, ["--megatron-path", f"{s['out']}/nothing", "--output", f"{s['out']}/e",
                              "--hf-config-from", s["kv1"]], IN_ONE_PROCESS),
        "m2h_not_a_checkpoint": (M2H, ["--megatron-path", s["llama"], "--output", f"{s['out']}/f",
                                       "--hf-config-from", s["llama"]], IN_ONE_PROCESS),
        "m2h_bad_info": (M2H, ["--megatron-path", s["bad_ckpt"], "--output", f"{s['out']}/g",
                               "--hf-config-from", s["kv1"]], None),  # made from the shared run's checkpoint
        "m2h_other_config": (M2H, ["--megatron-path", s["kv1_ckpt"], "--output", f"{s['out']}/h",
                                   "--hf-config-from", s["llama"]], IN_ONE_PROCESS),
        "verify_missing_weights": (VERIFY, ["--hf-path", s["bad_weights"], "--megatron-path", s["kv1_ckpt"]],
                                   IN_ONE_PROCESS),
    }


EXPECTED = {
    "comp_candidates_0": ("--comp_candidates 0:", "positive"),
    "comp_candidates_negative": ("--comp_candidates 2 -4:", "-4"),
    "batch_size_0": ("--per_device_train_batch_size 0:", ">= 1"),
    "logging_steps_0": ("--logging_steps 0:", ">= 1"),
    "logging_steps_text": ("--logging_steps:", "'ten'"),
    "output_dir_under_file": ("--output_dir", "notes.txt is a file"),
    "encoder_too_deep": ("--encoder_num_hidden_layers 9:", "4 layers"),
    "lm_missing": ("--language_model_name_or_path", "no such folder"),
    "lm_bad_weights": ("bad_weights/model.safetensors:", "unreadable"),
    "lm_bad_config": ("--language_model_name_or_path", "bad_config"),
    "encoder_other_family": ("--encoder_name_or_path", "qwen3", "llama"),
    "encoder_other_hidden": ("--encoder_name_or_path", "hidden_size 32", "hidden_size 64"),
    "trainer_tp_1_kv_head": ("--tensor_model_parallel_size 2:", "1 KV heads"),
    "trainer_world_size": ("--pipeline_model_parallel_size 4:", "2 launched"),
    "h2m_num_layers": ("--num-layers 5:", "4 layers"),
    "h2m_missing": ("--hf-path", "no such folder"),
    "h2m_bad_weights": ("bad_weights/model.safetensors:", "unreadable"),
    "h2m_world_size": ("--tp 2 x --pp 1:", "launched with 1"),
    "verify_missing_weights": ("bad_weights/model.safetensors:", "unreadable"),
    "m2h_missing": ("--megatron-path", "no such folder"),
    "m2h_not_a_checkpoint": ("--megatron-path", "metadata.json missing"),
    "m2h_bad_info": ("--megatron-path", "acerag_info.json:2: invalid JSON"),
    "m2h_other_config": ("--hf-config-from", "num_kv_heads 2", "num_kv_heads 1", "--megatron-path"),
    "verify_tp_1_kv_head": ("--tp 2:", "1 KV heads"),
    "evaluate_other_family": ("--encoder", "qwen3", "--lm", "llama"),
}


@pytest.fixture(scope="module")
def results(folders):
    cases = _cases(folders)
    shared = {name: case for name, case in cases.items() if case[2] == IN_ONE_PROCESS}
    calls = [("checkpoints_convert.hf_to_megatron", ["--hf-path", folders["kv1"], "--output", folders["kv1_ckpt"]])]
    calls += [(target[1], args) for target, args, _ in shared.values()]
    made, *outcomes = run_in_one_process(*calls)
    assert made["code"] == 0, made
    got = {name: (r["code"], r["message"] or "") for name, r in zip(shared, outcomes)}
    shutil.copytree(folders["kv1_ckpt"], folders["bad_ckpt"])
    (folders["bad_ckpt"] / "acerag_info.json").write_text("{\n  broken")
    launched = {name: case for name, case in cases.items() if case[2] != IN_ONE_PROCESS}
    return {**got, **run_all(launched, workers=3)}


@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_one_error_line(results, case):
    assert_one_error(results[case], *EXPECTED[case])


def test_every_case_is_checked(folders):
    assert set(_cases(folders)) == set(EXPECTED)
