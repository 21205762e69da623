"""--report_to: transformers' report_to names, TensorBoard events and an offline W&B run holding
the logged metrics of a real (tiny, CPU) training run, and the rank-0 tqdm step bar."""
import json
import os

import pytest

from acerag_megatron.training import metric_sinks
from acerag_megatron.training.metric_sinks import resolve_report_to
from acerag_megatron.training.reporting import Reporter
from tests.cli_errors import assert_one_error, run
from tests.launch import run_torchrun

TRAINER = "acerag_megatron.train_compressive_encoder"
STEPS = 3


def _args(assets, out, *extra):
    return ["--language_model_name_or_path", assets["llama"], "--window_mode", "True", "--min_length", "256",
            "--max_length", "4000", "--encoder_num_hidden_layers", "2", "--window", "128",
            "--encoder_max_length", "512", "--comp_candidates", "1", "2", "4", "8",
            "--pretraining_down_scaling_method", "random", "--data_files", assets["files"]["redpajama"],
            "--output_dir", str(out), "--learning_rate", "5e-4", "--logging_steps", "1", "--max_steps", str(STEPS),
            "--global_batch_size", "2", "--save_strategy", "no", *extra]


def test_report_to_names_follow_transformers(monkeypatch):
    assert resolve_report_to([]) == resolve_report_to(["none"]) == resolve_report_to("none") == []
    assert resolve_report_to(["all"]) == ["tensorboard", "wandb"]  # both installed here
    assert resolve_report_to(["wandb", "tensorboard", "wandb"]) == ["wandb", "tensorboard"]
    with pytest.raises(SystemExit, match=r"^error: --report_to: mlflow is not supported, only tensorboard, wandb"):
        resolve_report_to(["tensorboard", "mlflow"])
    with pytest.raises(SystemExit, match=r"^error: --report_to: none is not supported"):
        resolve_report_to(["none", "wandb"])  # none / all only alone, as in transformers
    monkeypatch.setattr(metric_sinks, "_installed", lambda package: package != "wandb")
    assert resolve_report_to(["all"]) == ["tensorboard"]
    with pytest.raises(SystemExit, match=r"^error: --report_to: wandb requires the wandb package, which is not"):
        resolve_report_to(["wandb"])


def test_none_opens_no_sink(tmp_path):
    rep = Reporter(str(tmp_path), total_steps=2, enabled=True, report_to=["none"])
    rep.progress(1, 0.5)
    rep.log(1, {"loss": 0.5})
    rep.close()
    assert rep.sinks == [] and sorted(p.name for p in tmp_path.iterdir()) == ["metrics.jsonl"]


def test_unknown_sink_is_one_error_line_at_start(assets, tmp_path):
    result = run(["-m", TRAINER], *_args(assets, tmp_path / "out", "--report_to", "tensorboard", "comet"), nproc=1)
    assert_one_error(result, "--report_to: comet is not supported")
    assert not (tmp_path / "out" / "runs").exists()


def _tensorboard_scalars(out) -> dict[str, dict[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    runs = list((out / "runs").iterdir())
    assert len(runs) == 1, runs
    acc = EventAccumulator(str(runs[0]), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: {e.step: e.value for e in acc.Scalars(tag)} for tag in acc.Tags()["scalars"]}


def test_tensorboard_and_offline_wandb_hold_the_logged_metrics(assets, tmp_path):
    out = tmp_path / "run"
    log = run_torchrun(TRAINER, 1, *_args(assets, out, "--report_to", "tensorboard", "wandb"),
                       env={"WANDB_MODE": "offline", "WANDB_SILENT": "true", "HF_HUB_OFFLINE": "1"}, timeout=400)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, STEPS + 1))
    for r in records:  # the per-step metric lines stay on stdout next to the bar
        assert f"step {r['step']} | loss {r['loss']:.4g} |" in log
    assert f"{STEPS}/{STEPS} [" in log  # tqdm's final bar

    scalars = _tensorboard_scalars(out)
    assert {"loss", "lr", "grad_norm", "consumed_samples"} <= set(scalars)
    assert "window_loss" not in scalars  # a list, not a scalar
    for name in ("loss", "lr", "grad_norm", "consumed_samples"):
        assert scalars[name] == {r["step"]: pytest.approx(r[name], rel=1e-6) for r in records}, name

    wandb_runs = list((out / "wandb").glob("offline-run-*"))
    assert len(wandb_runs) == 1, list((out / "wandb").iterdir()) if (out / "wandb").exists() else out
    records_by_kind = _wandb_records(next(wandb_runs[0].glob("run-*.wandb")))
    history = [{item.nested_key[0]: json.loads(item.value_json) for item in h.item} for h in records_by_kind["history"]]
    assert [h["_step"] for h in history] == [r["step"] for r in records]
    for h, r in zip(history, records):
        assert {k: h[k] for k in ("loss", "lr", "grad_norm", "consumed_samples")} == \
            {k: r[k] for k in ("loss", "lr", "grad_norm", "consumed_samples")}
    summary = {}
    for record in records_by_kind["summary"]:
        summary.update({(u.key or u.nested_key[0]): json.loads(u.value_json) for u in record.update})
    assert summary["loss"] == records[-1]["loss"] and summary["_step"] == STEPS
    config = {item.key: json.loads(item.value_json) for item in records_by_kind["run"][0].config.update}
    assert config["max_steps"] == STEPS and config["output_dir"] == str(out)
    assert [e.exit_code for e in records_by_kind["exit"]] == [0]  # wandb.finish() ran


def _wandb_records(path) -> dict[str, list]:
    """The records of an offline W&B run file (wandb >= 0.19 reads them only in its Go core): a
    LevelDB-style log (32 KiB blocks; each chunk a 7-byte header crc32/length/type, 1 = whole
    record, 2/3/4 = first/middle/last piece) of wandb_internal_pb2.Record messages."""
    import struct

    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, pending, out = 7, b"", {}
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # a block's tail too short for a header is padding
            pos += 32768 - pos % 32768
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if length == 0 and kind == 0:
            break
        pending += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            out.setdefault(record.WhichOneof("record_type"), []).append(getattr(record, record.WhichOneof("record_type")))
            pending = b""
    return out
