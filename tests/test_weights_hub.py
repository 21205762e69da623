"""Hub ids for weight reading: one weight format fetched (safetensors when there is any, .bin
otherwise), the offline cache honoured, and one download per node under torchrun. A local HTTP
server (tests/fake_hub.py) stands in for the hub and records what was asked for."""
import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from tests.fake_hub import FakeHub
from tests.launch import ROOT, run_torchrun


@pytest.fixture(scope="module")
def repos(tmp_path_factory):
    """org/both: model.safetensors and pytorch_model.bin (as Llama-2-7b-chat-hf ships both);
    org/bin-sharded: pytorch_model.bin.index.json + two .bin shards only."""
    from acerag_megatron.tiny.models import make_tiny_hf_model

    root = tmp_path_factory.mktemp("hub_repos")
    both = make_tiny_hf_model("llama", root / "both", vocab_size=64, hidden_size=16, num_layers=1, heads=2, kv_heads=1)
    tensors = load_file(both / "model.safetensors")
    torch.save(tensors, both / "pytorch_model.bin")
    sharded = root / "bin-sharded"
    sharded.mkdir()
    (sharded / "config.json").write_text((both / "config.json").read_text())
    names = sorted(tensors)
    shards = {"pytorch_model-00001-of-00002.bin": names[::2], "pytorch_model-00002-of-00002.bin": names[1::2]}
    for file, part in shards.items():
        torch.save({n: tensors[n] for n in part}, sharded / file)
    weight_map = {n: file for file, part in shards.items() for n in part}
    (sharded / "pytorch_model.bin.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return {"org/both": both, "org/bin-sharded": sharded}, tensors


READ = """
import json, sys
from acerag_megatron.weights.hf_folder import HFCheckpoint
out = {}
for repo in sys.argv[1:]:
    try:
        c = HFCheckpoint(repo)
    except FileNotFoundError as e:
        out[repo] = {"error": str(e)}
        continue
    out[repo] = {"path": str(c.path), "files": sorted({p.name for p in c._file_of.values()}),
                 "sum": float(sum(c.get(k).double().sum() for k in c.keys()))}
print("RESULT " + json.dumps(out))
"""


def _read(env: dict, *repos: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", READ, *repos], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **env})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.split("RESULT ", 1)[1])


def test_hub_ids_fetch_one_weight_format_then_read_offline(repos, tmp_path):
    folders, tensors = repos
    expected = float(sum(t.double().sum() for t in tensors.values()))
    online = {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "0"}
    with FakeHub(folders) as hub:
        got = _read({**online, "HF_ENDPOINT": hub.endpoint}, "org/both", "org/bin-sharded")
    assert got["org/both"]["files"] == ["model.safetensors"]
    assert got["org/bin-sharded"]["files"] == ["pytorch_model-00001-of-00002.bin", "pytorch_model-00002-of-00002.bin"]
    assert all(r["sum"] == pytest.approx(expected) for r in got.values())
    # Downloaded: the config and one format; the .bin of org/both is never asked for.
    assert sorted(hub.fetched("GET")) == sorted([
        "config.json", "model.safetensors",
        "config.json", "pytorch_model.bin.index.json",
        "pytorch_model-00001-of-00002.bin", "pytorch_model-00002-of-00002.bin"])
    assert not any(f == "pytorch_model.bin" for _, _, f in hub.requests)

    # Offline, with the server gone: the same snapshots from the cache alone.
    offline = _read({**online, "HF_HUB_OFFLINE": "1", "HF_ENDPOINT": "http://127.0.0.1:9"},
                    "org/both", "org/bin-sharded", "org/never-fetched")
    assert {r: offline[r]["path"] for r in folders} == {r: got[r]["path"] for r in folders}
    assert offline["org/both"]["sum"] == pytest.approx(expected)
    assert "org/never-fetched" in offline["org/never-fetched"]["error"]
    assert "HF cache (offline)" in offline["org/never-fetched"]["error"]


def test_two_ranks_of_a_node_download_each_file_once(repos, tmp_path):
    folders, _ = repos
    env = {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "0"}
    with FakeHub(folders) as hub:
        out = run_torchrun("tests.workers.weights_hub", 2, "org/both", "org/bin-sharded",
                           env={**env, "HF_ENDPOINT": hub.endpoint}, timeout=180)
    for rank in (0, 1):
        assert f"rank {rank} org/both: (64, 16)" in out and f"rank {rank} org/bin-sharded: (64, 16)" in out
    # Local rank 0 alone talks to the hub; rank 1 reads what it cached.
    asked = [(m, r, f) for m, r, f in hub.requests if r in folders]
    assert len(asked) == len(set(asked)), asked
    assert sorted(hub.fetched("GET")) == sorted([
        "config.json", "model.safetensors", "config.json", "pytorch_model.bin.index.json",
        "pytorch_model-00001-of-00002.bin", "pytorch_model-00002-of-00002.bin"])


def test_folder_with_both_formats_reads_safetensors(repos, tmp_path):
    """A single model.safetensors wins over a .bin index in the same folder, as on the hub."""
    import shutil

    from acerag_megatron.weights.hf_folder import HFCheckpoint

    folders, tensors = repos
    mixed = shutil.copytree(folders["org/bin-sharded"], tmp_path / "mixed")
    shutil.copy(folders["org/both"] / "model.safetensors", mixed)
    checkpoint = HFCheckpoint(str(mixed))
    assert {p.name for p in checkpoint._file_of.values()} == {"model.safetensors"}
    assert sorted(checkpoint.keys()) == sorted(tensors)


ARCH = """
import sys
from acerag_megatron.models.arch import ModelArch
a = ModelArch.from_hf(sys.argv[1])
print("ARCH", a.family, a.num_layers, a.hf_config["_name_or_path"])
try:
    ModelArch.from_hf(sys.argv[2])
except FileNotFoundError as e:
    print("MISSING", e)
"""


def test_arch_from_hub_id_offline(repos, tmp_path):
    """An offline cached id reads like its folder; an uncached one says it is not in the offline cache."""
    from acerag_megatron.tiny.hub_cache import put_in_hf_cache

    folders, _ = repos
    put_in_hf_cache(folders["org/both"], "org/both", tmp_path / "hf")
    proc = subprocess.run([sys.executable, "-c", ARCH, "org/both", "org/absent"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT), "HF_HOME": str(tmp_path / "hf"),
                                                       "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "ARCH llama 1 org/both" in proc.stdout
    assert "MISSING org/absent: not a local folder, and config.json is not on the hub or in the HF cache (offline)" \
        in proc.stdout
