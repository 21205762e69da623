"""Hub ids offline: the tiny models in an HF cache (tiny/hub_cache.py) and the tokenizer hash that keys
the preprocessing cache (only the tokenizer's own files, resolved through huggingface_hub)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from acerag_megatron.tiny.hub_cache import put_in_hf_cache  # noqa: E402
from acerag_megatron.tiny.models import make_tiny_hf_model  # noqa: E402
from acerag_megatron.tiny.tokenizers import make_tiny_tokenizer  # noqa: E402


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory):
    folder = make_tiny_tokenizer("llama", tmp_path_factory.mktemp("lm") / "llama")
    from transformers import AutoTokenizer
    make_tiny_hf_model("llama", folder, len(AutoTokenizer.from_pretrained(str(folder))), hidden_size=32,
                       num_layers=2)
    return folder


def offline_python(code: str, hf_home: Path) -> subprocess.CompletedProcess:
    # HF_HOME is read when huggingface_hub is imported, so each cache is tried in a fresh process.
    env = {**os.environ, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1"}
    env.pop("HF_HUB_CACHE", None)
    env.pop("TRANSFORMERS_CACHE", None)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)


def test_put_in_hf_cache_loads_offline_by_hub_id(tiny_lm, tmp_path):
    hf_home = tmp_path / "hf"
    put_in_hf_cache(tiny_lm, "meta-llama/Llama-2-7b-chat-hf", hf_home)
    repo = hf_home / "hub" / "models--meta-llama--Llama-2-7b-chat-hf"
    revision = (repo / "refs" / "main").read_text()
    assert len(revision) == 40 and (repo / "snapshots" / revision / "config.json").is_file()
    code = (
        "import json, torch\n"
        "from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer\n"
        "from huggingface_hub import try_to_load_from_cache\n"
        "r = 'meta-llama/Llama-2-7b-chat-hf'\n"
        "tok = AutoTokenizer.from_pretrained(r)\n"
        "m = AutoModelForCausalLM.from_pretrained(r)\n"
        "print(json.dumps({'vocab': len(tok), 'layers': AutoConfig.from_pretrained(r).num_hidden_layers,\n"
        "  'ids': tok('hello world')['input_ids'], 'norm': m.model.norm.weight.sum().item(),\n"
        "  'cached': try_to_load_from_cache(r, 'tokenizer.model')}))\n")
    r = offline_python(code, hf_home)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout.strip().splitlines()[-1])
    from transformers import AutoModelForCausalLM, AutoTokenizer
    tok = AutoTokenizer.from_pretrained(str(tiny_lm))
    assert got["vocab"] == len(tok) and got["ids"] == tok("hello world")["input_ids"] and got["layers"] == 2
    assert got["norm"] == pytest.approx(AutoModelForCausalLM.from_pretrained(str(tiny_lm)).model.norm.weight.sum().item())
    assert Path(got["cached"]).read_bytes() == (tiny_lm / "tokenizer.model").read_bytes()


def test_put_in_hf_cache_replaces_and_checks(tiny_lm, tmp_path):
    hf_home = tmp_path / "hf"
    put_in_hf_cache(tiny_lm, "org/tiny", hf_home)
    refs = hf_home / "hub" / "models--org--tiny" / "refs" / "main"
    first = refs.read_text()
    put_in_hf_cache(tiny_lm, "org/tiny", hf_home)
    assert refs.read_text() == first, "the same folder gives the same revision"
    changed = tmp_path / "changed"
    changed.mkdir()
    (changed / "config.json").write_text("{}")
    put_in_hf_cache(changed, "org/tiny", hf_home)
    assert refs.read_text() != first
    with pytest.raises(ValueError, match="org/name"):
        put_in_hf_cache(tiny_lm, "no-org", hf_home)
