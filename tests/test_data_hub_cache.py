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


def offline_python(code: str, hf_home: Path, *args: str) -> subprocess.CompletedProcess:
    """`python -c code` (or `python args...` when code is empty) offline on the cache at hf_home."""
    # HF_HOME is read when huggingface_hub is imported, so each cache is tried in a fresh process.
    env = {**os.environ, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1"}
    env.pop("HF_HUB_CACHE", None)
    env.pop("TRANSFORMERS_CACHE", None)
    command = [sys.executable, *(["-c", code] if code else args)]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)


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


def test_tokenizer_hash_reads_only_tokenizer_files(tiny_lm, tmp_path):
    import shutil
    from acerag_megatron.data.preprocess import tokenizer_hash
    from acerag_megatron.data.tokenizer_files import TOKENIZER_FILES
    only = tmp_path / "tokenizer_only"
    only.mkdir()
    for name in TOKENIZER_FILES:
        if (tiny_lm / name).is_file():
            shutil.copy(tiny_lm / name, only / name)
    assert tokenizer_hash(tiny_lm) == tokenizer_hash(only), "weights and model config are not part of the hash"
    model = tmp_path / "model"
    shutil.copytree(tiny_lm, model)
    with open(model / "model.safetensors", "ab") as f:
        f.write(b"other weights")
    assert tokenizer_hash(model) == tokenizer_hash(tiny_lm)
    (only / "tokenizer_config.json").write_text((only / "tokenizer_config.json").read_text().replace("}", ', "x": 1}', 1))
    assert tokenizer_hash(only) != tokenizer_hash(tiny_lm)


def test_hub_id_preprocessing_offline(tiny_lm, tmp_path):
    from acerag_megatron.data.preprocess import tokenizer_hash
    hf_home = tmp_path / "hf"
    put_in_hf_cache(tiny_lm, "meta-llama/Llama-2-7b-chat-hf", hf_home)
    raw = tmp_path / "redpajama.jsonl"
    raw.write_text('{"text": "hello there"}\n{"text": "more words"}\n')
    code = (
        "import json, sys\n"
        "from types import SimpleNamespace\n"
        "from acerag_megatron.data.preprocess import DataError, read_manifest, tokenizer_hash\n"
        "from acerag_megatron.training.data_setup import resolve_prefixes\n"
        "r = 'meta-llama/Llama-2-7b-chat-hf'\n"
        f"args = SimpleNamespace(window_mode=True, data_files=[{str(raw)!r}], output_dir={str(tmp_path / 'run')!r},\n"
        "                       preprocess_cache_dir=None, allow_empty_data=False)\n"
        "prefix, = resolve_prefixes(args, r)\n"
        "try:\n"
        "    tokenizer_hash('org/not-cached')\n"
        "    missing = None\n"
        "except DataError as e:\n"
        "    missing = str(e)\n"
        "m = read_manifest(prefix)\n"
        "print(json.dumps({'hash': tokenizer_hash(r), 'tokenizer': m['tokenizer'], 'counts': m['counts'],\n"
        "                  'missing': missing}))\n")
    r = offline_python(code, hf_home)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got["hash"] == tokenizer_hash(tiny_lm) == got["tokenizer"]["hash"]
    assert got["tokenizer"]["name"] == "meta-llama/Llama-2-7b-chat-hf" and got["counts"]["kept"] == 2
    assert got["missing"].startswith("org/not-cached: no tokenizer files")
    tool = Path(__file__).resolve().parent.parent / "tools" / "preprocess_data.py"
    cli = offline_python("", hf_home, str(tool), "--input", str(raw), "--tokenizer", "meta-llama/Llama-2-7b-chat-hf",
                         "--output-prefix", str(tmp_path / "cli" / "rp"), "--mode", "pretrain", "--no-progress")
    assert cli.returncode == 0, cli.stderr
    assert json.loads((tmp_path / "cli" / "rp.json").read_text())["tokenizer"]["hash"] == got["hash"]
