"""Checkpoint integrity end to end under torchrun: checksums written with every save, a corrupt
latest checkpoint skipped at resume (with the reason), --save_total_limit, start-up clean-up,
metrics without repeated steps, a changed global batch refused, a crafted RNG pickle never
unpickled, and the converters refusing a torch_dist folder whose .metadata was altered."""
import json
import os
import shutil
import socket
import subprocess
import sys
import time

import pytest

from tests.launch import ROOT, run_torchrun
from tests.test_train_e2e import _finetune_args, _metrics

TRAINER = "acerag_megatron.train_compressive_encoder"


def _args(assets, out, cache, *extra):
    return _finetune_args(assets, out, "--preprocess_cache_dir", str(cache), "--save_strategy", "steps",
                          "--save_steps", "1", "--global_batch_size", "2", *extra)


def _checkpoint_names(out):
    return sorted((p.name for p in out.iterdir() if p.name.startswith("checkpoint-")),
                  key=lambda n: int(n.split("-")[1].split(".")[0]))


def _fails_with_one_line(module, *args, **kw) -> str:
    """Run, expect a non-zero exit, return the one `error:` line (and check there is no traceback of ours)."""
    with pytest.raises(AssertionError) as failed:
        run_torchrun(module, 1, *args, **kw)
    text = str(failed.value)
    errors = [line for line in text.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, text[-4000:]
    assert f'File "{ROOT / "acerag_megatron"}' not in text, text[-4000:]
    return errors[0]


def _flip(path, offset, n=64):
    data = bytearray(path.read_bytes())
    assert offset + n <= len(data), (path, len(data))
    data[offset:offset + n] = bytes(b ^ 0xFF for b in data[offset:offset + n])
    path.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def base(assets, tmp_path_factory):
    """Three steps at DP=2 saved at every step with --save_total_limit 2."""
    root = tmp_path_factory.mktemp("integrity")
    out = root / "base"
    run_torchrun(TRAINER, 2, *_args(assets, out, root / "cache", "--max_steps", "3", "--save_total_limit", "2"))
    return root, out


def test_saves_carry_checksums_and_the_limit_keeps_the_newest(base):
    from acerag_megatron.weights.manifest import verify_checkpoint_dir

    _, out = base
    assert _checkpoint_names(out) == ["checkpoint-2", "checkpoint-3"]
    ck = out / "checkpoint-3"
    listed = json.loads((ck / "checksums.json").read_text())["files"]
    assert {"megatron/.metadata", "megatron/__0_0.distcp", "rng/rank_0.safetensors",
            "rng/rank_1.safetensors", "train_state.json",
            "compressive_encoder/model.safetensors", "compressive_encoder/config.json"} <= set(listed)
    assert not list(ck.glob("rng/*.pt"))
    assert verify_checkpoint_dir(ck) is True


def test_corrupt_latest_checkpoint_is_skipped_and_steps_are_not_logged_twice(assets, base, tmp_path):
    from acerag_megatron.weights.manifest import verify_checkpoint_dir

    root, src = base
    out = tmp_path / "run"
    shutil.copytree(src, out)
    from acerag_megatron.weights.manifest import _owners

    # 64 flipped bytes in a shard, and one more in a file the other rank hashes at
    # resume: both verdicts reach rank 0.
    entries = sorted(json.loads((out / "checkpoint-3" / "checksums.json").read_text())["files"].items())
    owner = dict(zip([n for n, _ in entries], _owners([e["size"] for _, e in entries], 2)))
    other = next(n for n, e in entries if owner[n] != owner["megatron/__0_0.distcp"] and e["size"] > 2000)
    _flip(out / "checkpoint-3" / "megatron" / "__0_0.distcp", offset=4096)
    _flip(out / "checkpoint-3" / other, offset=1000)
    (out / "checkpoint-7.tmp" / "megatron").mkdir(parents=True)  # a save killed half-way
    (out / ".checkpoint-1.old").mkdir()  # a replacement killed half-way
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    prefix_dir = next((root / "cache").rglob("*.bin")).parent
    stale = prefix_dir / f".longalpaca.tmp-{socket.gethostname()}-{dead.pid}.bin"  # a killed preprocessing run
    stale.write_bytes(b"partial")
    an_hour_ago = time.time() - 3600
    os.utime(stale, (an_hour_ago, an_hour_ago))

    log = run_torchrun(TRAINER, 2, *_args(assets, out, root / "cache", "--max_steps", "4", "--save_total_limit", "2"))
    bad = sorted(["megatron/__0_0.distcp", other])
    assert log.count(f"warning: skipped checkpoint-3: {bad[0]}: sha256 mismatch (corrupted since it was saved); "
                     f"{bad[1]}: sha256 mismatch") == 1, log[-4000:]
    assert "warning: falling back to checkpoint-2, the newest checkpoint that verifies" in log
    assert f"resumed from {out / 'checkpoint-2'} at step 2" in log
    assert not (out / "checkpoint-7.tmp").exists() and not (out / ".checkpoint-1.old").exists()
    assert not stale.exists()

    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]
    ref, got = _metrics(src), _metrics(out)
    assert got[3]["loss"] == pytest.approx(ref[3]["loss"], abs=1e-6)  # step 3 retrained from a sound state
    assert _checkpoint_names(out) == ["checkpoint-3", "checkpoint-4"]
    assert all(verify_checkpoint_dir(out / name) for name in ("checkpoint-3", "checkpoint-4"))


def test_changed_global_batch_is_refused(assets, base, tmp_path):
    root, src = base
    out = tmp_path / "run"
    shutil.copytree(src, out)
    line = _fails_with_one_line(TRAINER, *_args(assets, out, root / "cache", "--max_steps", "6",
                                                "--global_batch_size", "4"))
    assert line.startswith("error: --global_batch_size: 4, 2 when saved (resuming ")
    assert "--allow_resume_changes resumes anyway" in line


class _Payload:
    def __init__(self, sentinel):
        self.sentinel = sentinel

    def __reduce__(self):
        return (os.system, (f"touch {self.sentinel}",))


def test_crafted_rng_pickle_is_never_unpickled(assets, base, tmp_path):
    """A checkpoint from before checksums (no checksums.json) whose rng/rank_0.pt runs a command
    when unpickled: resume refuses it with one line and the command never runs."""
    root, src = base
    legacy = tmp_path / "legacy" / "checkpoint-2"
    shutil.copytree(src / "checkpoint-2", legacy)
    (legacy / "checksums.json").unlink()
    (legacy / "rng" / "rank_0.safetensors").unlink()
    sentinel = tmp_path / "code-ran"
    import torch

    torch.save({"cpu": _Payload(sentinel), "cuda": None}, legacy / "rng" / "rank_0.pt")  # what torch.load reads
    line = _fails_with_one_line(TRAINER, *_args(assets, tmp_path / "run", root / "cache", "--max_steps", "3",
                                                "--resume_from_checkpoint", str(legacy)))
    assert line.startswith(f"error: {legacy / 'rng' / 'rank_0.pt'}: refused (not plain tensors")
    assert not sentinel.exists()


def test_converter_refuses_an_altered_metadata(assets, tmp_path):
    env = {"HF_HUB_OFFLINE": "1"}
    ckpt = tmp_path / "mcore"
    run_torchrun("checkpoints_convert.hf_to_megatron", 1, "--hf-path", assets["llama"], "--output", str(ckpt),
                 env=env, timeout=180)
    assert "megatron/.metadata" not in json.loads((ckpt / "checksums.json").read_text())["files"]
    assert ".metadata" in json.loads((ckpt / "checksums.json").read_text())["files"]
    _flip(ckpt / ".metadata", offset=32, n=8)
    line = _fails_with_one_line("checkpoints_convert.megatron_to_hf", "--megatron-path", str(ckpt),
                                "--output", str(tmp_path / "back"), "--hf-config-from", assets["llama"],
                                env=env, timeout=180)
    assert line == f"error: {ckpt}: .metadata: sha256 mismatch (corrupted since it was saved)"
    assert not (tmp_path / "back").exists()
