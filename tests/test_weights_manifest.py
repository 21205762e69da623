"""Checksum manifests, atomic writes, checkpoint selection and clean-up on plain folders (no
process group): what resume and the converters rely on before they unpickle anything."""
import json
import os
import socket
import subprocess
import sys
import time

import pytest

from acerag_megatron.training.checkpoint import (STALE_TMP_AGE_S, load_rng, read_train_state, remove_stale_files,
                                                 rotate_checkpoints, save_rng, select_checkpoint)
from acerag_megatron.training.reporting import Reporter
from acerag_megatron.training.run_identity import resume_changes
from acerag_megatron.weights.atomic import remove_dir, replace_dir, write_file
from acerag_megatron.weights.manifest import (MANIFEST_FILE, CheckpointError, verify_checkpoint_dir, verify_for_load,
                                              write_manifest)


def _fake_checkpoint(root, step, manifest=True):
    """A checkpoint-<step> folder with the files resume looks at (contents are not loaded here)."""
    ck = root / f"checkpoint-{step}"
    (ck / "megatron").mkdir(parents=True)
    (ck / "rng").mkdir()
    (ck / "megatron" / ".metadata").write_bytes(b"metadata" * 10)
    (ck / "megatron" / "__0_0.distcp").write_bytes(os.urandom(4096))
    (ck / "rng" / "rank_0.safetensors").write_bytes(b"rng")
    (ck / "train_state.json").write_text(json.dumps({"step": step, "consumed_samples": 2 * step, "scheduler": {}}))
    if manifest:
        write_manifest(ck)
    return ck


def _flip(path, offset=100, n=64):
    data = bytearray(path.read_bytes())
    data[offset:offset + n] = bytes(b ^ 0xFF for b in data[offset:offset + n])
    path.write_bytes(bytes(data))


def test_manifest_detects_flips_truncation_missing_and_added_files(tmp_path):
    ck = _fake_checkpoint(tmp_path, 3)
    listed = json.loads((ck / MANIFEST_FILE).read_text())["files"]
    assert sorted(listed) == ["megatron/.metadata", "megatron/__0_0.distcp", "rng/rank_0.safetensors",
                              "train_state.json"]
    assert verify_checkpoint_dir(ck) is True

    _flip(ck / "megatron" / "__0_0.distcp")
    with pytest.raises(CheckpointError, match=r"megatron/__0_0.distcp: sha256 mismatch"):
        verify_checkpoint_dir(ck)
    with open(ck / "megatron" / "__0_0.distcp", "r+b") as f:
        f.truncate(1000)
    with pytest.raises(CheckpointError, match=r"__0_0.distcp: 1000 bytes, 4096 when saved"):
        verify_checkpoint_dir(ck)
    (ck / "megatron" / "__0_0.distcp").unlink()
    (ck / "rng" / "rank_0.pt").write_bytes(b"crafted")
    with pytest.raises(CheckpointError) as e:
        verify_checkpoint_dir(ck)
    assert "megatron/__0_0.distcp: missing" in str(e.value)
    assert "rng/rank_0.pt: not in checksums.json" in str(e.value) and "\n" not in str(e.value)

    (ck / MANIFEST_FILE).write_text("{not json")
    with pytest.raises(CheckpointError, match="checksums.json: unreadable"):
        verify_checkpoint_dir(ck)
    (ck / MANIFEST_FILE).unlink()
    assert verify_checkpoint_dir(ck) is False  # saved before checksums: nothing to compare


def test_hashing_is_spread_over_ranks_by_size():
    from acerag_megatron.weights.manifest import _owners

    # Data-parallel rank 0 writes the whole optimizer state: the other ranks still share the hashing.
    assert _owners([10, 1, 1, 8], 2) == [0, 1, 1, 1]
    assert _owners([5] * 4, 4) == [0, 1, 2, 3] and _owners([3, 0], 1) == [0, 0]


def test_a_torch_dist_folder_is_verified_through_the_enclosing_checkpoint(tmp_path):
    ck = _fake_checkpoint(tmp_path, 1)
    assert verify_for_load(ck / "megatron") is True
    (ck / "compressive_encoder").mkdir()
    (ck / "compressive_encoder" / "notes.txt").write_text("outside megatron/: not this load's business")
    assert verify_for_load(ck / "megatron") is True
    _flip(ck / "megatron" / ".metadata", offset=0, n=8)
    with pytest.raises(CheckpointError, match=r"megatron: megatron/.metadata: sha256 mismatch"):
        verify_for_load(ck / "megatron")
    plain = tmp_path / "plain"
    plain.mkdir()
    assert verify_for_load(plain) is False


def test_resume_falls_back_to_the_newest_checkpoint_that_verifies(tmp_path, capsys):
    for step in (1, 2, 3, 4, 5):
        _fake_checkpoint(tmp_path, step)
    _flip(tmp_path / "checkpoint-5" / "megatron" / "__0_0.distcp")
    with open(tmp_path / "checkpoint-4" / "megatron" / "__0_0.distcp", "r+b") as f:
        f.truncate(10)
    remove_dir(tmp_path / "checkpoint-3" / "megatron")
    (tmp_path / "checkpoint-2" / "train_state.json").write_text("{")
    assert select_checkpoint("auto", tmp_path) == tmp_path / "checkpoint-1"
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("warning: skipped checkpoint-5: megatron/__0_0.distcp: sha256 mismatch")
    assert out[1].startswith("warning: skipped checkpoint-4: megatron/__0_0.distcp: 10 bytes, 4096 when saved")
    assert out[2].startswith("warning: skipped checkpoint-3: megatron/.metadata: missing")
    assert out[3].startswith("warning: skipped checkpoint-2: train_state.json: ")
    assert out[4] == "warning: falling back to checkpoint-1, the newest checkpoint that verifies"

    with pytest.raises(SystemExit) as e:
        select_checkpoint(str(tmp_path / "checkpoint-5"), tmp_path)
    assert str(e.value).startswith(f"error: --resume_from_checkpoint {tmp_path / 'checkpoint-5'}: megatron/__0_0")
    assert "\n" not in str(e.value)
    remove_dir(tmp_path / "checkpoint-1")
    with pytest.raises(SystemExit, match=r"^error: --output_dir .*: no checkpoint verifies \(checkpoint-5: "):
        select_checkpoint("auto", tmp_path)
    assert select_checkpoint("none", tmp_path) is None
    assert select_checkpoint("auto", tmp_path / "empty") is None


def test_checkpoint_without_manifest_resumes_with_a_warning(tmp_path, capsys):
    _fake_checkpoint(tmp_path, 7, manifest=False)
    assert select_checkpoint("auto", tmp_path) == tmp_path / "checkpoint-7"
    assert "no checksums.json (saved before checksums): resuming unverified" in capsys.readouterr().out


def test_train_state_fields_are_checked(tmp_path):
    (tmp_path / "train_state.json").write_text(json.dumps({"step": "3", "consumed_samples": 6, "scheduler": {}}))
    with pytest.raises(CheckpointError, match="train_state.json: no int field 'step'"):
        read_train_state(tmp_path)
    (tmp_path / "train_state.json").write_text("[]")
    with pytest.raises(CheckpointError, match="train_state.json: no int field 'step'"):
        read_train_state(tmp_path)


def test_crafted_rng_pickle_is_not_executed(tmp_path):
    sentinel = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {sentinel}",))

    rng = tmp_path / "rng"
    rng.mkdir()
    import torch

    torch.save({"cpu": Payload()}, rng / "rank_0.pt")  # in the format torch.load(weights_only=False) would run
    with pytest.raises(SystemExit, match=r"^error: .*rank_0.pt: refused \(not plain tensors"):
        load_rng(rng, 0)
    assert not sentinel.exists()


def test_rng_state_round_trips_through_safetensors(tmp_path):
    import torch

    save_rng(tmp_path, 3)
    expected = torch.rand(4)
    torch.rand(100)
    load_rng(tmp_path, 3)
    assert torch.equal(torch.rand(4), expected)
    assert [p.name for p in tmp_path.iterdir()] == ["rank_3.safetensors"]
    legacy = tmp_path / "legacy"  # rng/rank_<k>.pt as saved before safetensors: still read, as plain tensors
    legacy.mkdir()
    torch.save({"cpu": torch.get_rng_state(), "cuda": None}, legacy / "rank_0.pt")
    expected = torch.rand(4)
    load_rng(legacy, 0)
    assert torch.equal(torch.rand(4), expected)


def test_atomic_writes_leave_no_temporaries(tmp_path):
    write_file(tmp_path / "a.json", "1")
    write_file(tmp_path / "a.json", b"2")
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"] and (tmp_path / "a.json").read_text() == "2"
    out, tmp = tmp_path / "out", tmp_path / "out.tmp"
    for text in ("old", "new"):
        tmp.mkdir()
        (tmp / "f").write_text(text)
        replace_dir(tmp, out)
    assert (out / "f").read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "out"]


def test_stale_temporaries_are_removed_and_live_ones_kept(tmp_path):
    run, data = tmp_path / "run", tmp_path / "cache" / "key"
    data.mkdir(parents=True)
    (run / "checkpoint-9.tmp" / "megatron").mkdir(parents=True)
    (run / ".checkpoint-2.old").mkdir()
    (run / "checkpoint-2").mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    here = socket.gethostname()
    old_stale = [data / f".longalpaca.tmp{dead.pid}.bin",  # no host recorded: dead here and old
                 data / f".longalpaca.tmp-another-host-{os.getpid()}.bin"]  # another host, not written for long
    stale = old_stale + [run / f".metrics.jsonl.tmp-{here}-{dead.pid}",  # this host, writer gone
                         data / f".redpajama.tmp-{here}-{dead.pid}.json"]
    kept = [data / f".longalpaca.tmp-{here}-{os.getpid()}.bin",  # its writer is alive
            data / f".redpajama.tmp{dead.pid}.idx",  # no host, written recently: maybe by another node
            data / f".redpajama.tmp-another-host-{dead.pid}.bin",  # another host, written recently
            data / "longalpaca.bin"]
    for p in stale + kept:
        p.write_bytes(b"x")
    old = time.time() - STALE_TMP_AGE_S - 60
    for p in old_stale + kept[:1]:
        os.utime(p, (old, old))
    removed = remove_stale_files(run, [data])
    assert sorted(removed) == sorted([run / "checkpoint-9.tmp", run / ".checkpoint-2.old", *stale])
    assert all(p.exists() for p in kept) and (run / "checkpoint-2").is_dir()


def test_rotation_keeps_the_newest_checkpoints_up_to_the_saved_step(tmp_path):
    for step in (2, 4, 6, 8, 10):
        (tmp_path / f"checkpoint-{step}").mkdir()
    assert rotate_checkpoints(tmp_path, 2, 6) == [tmp_path / "checkpoint-2"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-10", "checkpoint-4", "checkpoint-6",
                                                           "checkpoint-8"]
    rotate_checkpoints(tmp_path, 2, 10)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-10", "checkpoint-8"]


def test_resume_changes_name_the_flag():
    saved = {"run": {"global_batch_size": 2, "data_files": [{"name": "a", "source_sha256": "x"}],
                     "num_samples": 10, "tokenizer": "t"}}
    same = json.loads(json.dumps(saved["run"]))
    assert resume_changes(saved, same) == []
    assert resume_changes(saved, {**same, "global_batch_size": 4}) == ["--global_batch_size: 4, 2 when saved"]
    assert resume_changes(saved, {**same, "data_files": [{"name": "a", "source_sha256": "y"}]}) == [
        "--data_files: content of a changed since the save"]
    assert resume_changes(saved, {**same, "num_samples": 9}) == [
        "--data_files: 9 samples after filtering, 10 when saved"]
    assert resume_changes(saved, {**same, "tokenizer": "u"}) == [
        "--language_model_name_or_path: another tokenizer than the saved run's"]
    legacy = {"global_batch_size": 2}
    assert resume_changes(legacy, same) == [] and len(resume_changes(legacy, {**same, "global_batch_size": 8})) == 1


def test_metrics_are_cut_back_to_the_resumed_step(tmp_path):
    lines = [json.dumps({"step": s, "loss": 1.0}) for s in (1, 2, 3)] + ['{"step": 4, "lo']
    (tmp_path / "metrics.jsonl").write_text("\n".join(lines))
    rep = Reporter(str(tmp_path), total_steps=5, enabled=True)
    rep.start_step = 2
    rep.log(3, {"loss": 0.5})
    rep.log(4, {"loss": 0.4})
    steps = [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]
