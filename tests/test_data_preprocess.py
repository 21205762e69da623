"""Preprocessing: round trips, bad input, atomic output, workers, cache (tools/preprocess_data.py)."""
import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from acerag_megatron import CONTEXT_TAG  # noqa: E402
from acerag_megatron.data.chat import encode_text, load_tokenizer  # noqa: E402
from acerag_megatron.data.preprocess import (DataError, ensure_preprocessed, preprocess_file,  # noqa: E402
                                             read_manifest)
from acerag_megatron.tiny.corpus import make_records  # noqa: E402
from acerag_megatron.tiny.tokenizers import make_tiny_tokenizer  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def indexed(prefix):
    from megatron.core.datasets.indexed_dataset import IndexedDataset
    return IndexedDataset(str(prefix), mmap=True)


def documents(prefix):
    ds = indexed(prefix)
    bounds = ds.document_indices
    return [[ds[s].astype(np.int64).tolist() for s in range(bounds[d], bounds[d + 1])] for d in range(len(bounds) - 1)]


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.fixture(scope="module")
def toks(tmp_path_factory):
    return {f: str(make_tiny_tokenizer(f, tmp_path_factory.mktemp(f))) for f in ("llama", "qwen3")}


@pytest.mark.parametrize("family", ["llama", "qwen3"])
def test_pretrain_roundtrip_equals_tokenizer(toks, tmp_path, family):
    records = make_records("redpajama", 5, seed=3, words=60) + [{"text": "naïve café – ünïcode ✓", "x": 1}]
    src = write_jsonl(tmp_path / "redpajama.jsonl", records)
    manifest = preprocess_file(src, toks[family], tmp_path / "out", "pretrain", progress=False)
    tok = load_tokenizer(toks[family], add_context_tag=False)
    docs = documents(tmp_path / "out")
    assert [d[0] for d in docs] == [encode_text(tok, r["text"]) for r in records]
    assert (docs[0][0][0] == 1) == (family == "llama"), "Llama adds BOS, Qwen3 adds nothing"
    assert tok.decode(docs[-1][0], skip_special_tokens=True) == records[-1]["text"]
    assert manifest["counts"] == {"read": 6, "kept": 6, "dropped": {}, "kept_with_warning": {}}
    assert manifest["dtype"] == "uint16" and manifest["mode"] == "pretrain"


def test_finetune_roundtrip_and_manifest(toks, tmp_path):
    records = make_records("nq", 3, seed=1, words=80)
    src = tmp_path / "nq.json.gz"
    with gzip.open(src, "wt") as f:
        json.dump(records, f, indent=1)
    manifest = preprocess_file(src, toks["qwen3"], tmp_path / "nq", "finetune", progress=False)
    assert manifest["dataset_name"] == "nq" and manifest["instruction"].startswith("Answer the question")
    tok = load_tokenizer(toks["qwen3"])
    assert manifest["instruction_ids"] == tok(manifest["instruction"], add_special_tokens=False)["input_ids"]
    assert manifest["tokenizer"]["bos_id"] is None and manifest["tokenizer"]["pad_id"] is not None
    for rec, (head, ctx, tail_prompt, answer) in zip(records, documents(tmp_path / "nq")):
        docs = "\n\n".join(f"Doc {i + 1}: {d}" for i, d in enumerate(rec["key"][:5]))
        assert tok.decode(ctx).strip() == docs
        assert tok.decode(answer) == rec["answers"][0] + "<|im_end|>\n"
        assert "Question: " + rec["query"] in tok.decode(tail_prompt)


def _mixed_records(n=1000):
    rng = np.random.default_rng(0)
    good = make_records("longalpaca", 8, seed=0, words=30)
    lines, expected = [], {"malformed_json": 0, "missing_field": 0, "wrong_type": 0, "bad_context_tag": 0}
    for i in range(n):
        kind = rng.integers(0, 8)
        rec = json.loads(json.dumps(good[i % len(good)]))
        if kind < 4 and "first_bad" not in expected:
            expected["first_bad"] = i + 1
        if kind == 0:
            lines.append('{"conversations": [ broken'); expected["malformed_json"] += 1
            continue
        if kind == 1:
            rec = {"chat": []}; expected["missing_field"] += 1
        elif kind == 2:
            rec["conversations"][0]["context"] = 7; expected["wrong_type"] += 1
        elif kind == 3:
            rec["conversations"][0]["prompt"] += CONTEXT_TAG; expected["bad_context_tag"] += 1
        lines.append(json.dumps(rec))
    return lines, expected, expected.pop("first_bad")


def test_thousand_mixed_records(toks, tmp_path, capfd):
    lines, expected, first_bad = _mixed_records()
    src = tmp_path / "longalpaca.jsonl"
    src.write_text("\n".join(lines) + "\n")
    manifest = preprocess_file(src, toks["llama"], tmp_path / "la", "finetune", progress=False)
    c = manifest["counts"]
    assert c["read"] == 1000 and c["kept"] + sum(c["dropped"].values()) == c["read"]
    assert c["dropped"] == {k: v for k, v in sorted(expected.items()) if v}
    assert read_manifest(tmp_path / "la") == manifest
    assert len(indexed(tmp_path / "la").document_indices) - 1 == c["kept"]
    err = capfd.readouterr().err
    assert f"{src}:{first_bad}: skipped:" in err


def test_strict_stops_and_writes_nothing(toks, tmp_path):
    lines, _, _ = _mixed_records(50)
    src = tmp_path / "longalpaca.jsonl"
    src.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    with pytest.raises(DataError, match=r"longalpaca.jsonl:\d+: "):
        preprocess_file(src, toks["llama"], out / "la", "finetune", strict=True, progress=False)
    assert list(out.iterdir()) == []


def test_json_array_line_numbers_and_bad_fields(toks, tmp_path, capfd):
    src = tmp_path / "redpajama.json"
    src.write_text('[\n  {"text": "hello there"},\n  {"text": ""},\n  {"text": ["x"]},\n  {"txt": "a"}\n]\n')
    manifest = preprocess_file(src, toks["llama"], tmp_path / "rp", "pretrain", progress=False)
    assert manifest["counts"]["dropped"] == {"empty_text": 1, "missing_field": 1, "wrong_type": 1}
    err = capfd.readouterr().err
    assert f"{src}:3: skipped: field 'text' is empty" in err
    assert f"{src}:4: skipped: record: field 'text' must be str, got list" in err
    assert f"{src}:5: skipped: record: missing field 'text'" in err


def run_cli(*args):
    return subprocess.run([sys.executable, str(ROOT / "tools" / "preprocess_data.py"), *args, "--no-progress"],
                          capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})


def test_cli_errors_write_nothing(toks, tmp_path):
    good = write_jsonl(tmp_path / "nq.jsonl", make_records("nq", 2, seed=0, words=20))
    out = tmp_path / "out"
    r = run_cli("--input", str(good), str(tmp_path / "missing.json"), "--tokenizer", toks["llama"],
                "--output-prefix", str(out), "--mode", "finetune")
    assert r.returncode == 2 and "missing.json: no such input file" in r.stderr
    (tmp_path / "emptytok").mkdir()
    r = run_cli("--input", str(good), "--tokenizer", str(tmp_path / "emptytok"), "--output-prefix", str(out / "x"),
                "--mode", "finetune")
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "cannot load tokenizer" in r.stderr
    assert not out.exists() or list(out.iterdir()) == []


def test_cli_several_inputs_and_workers(toks, tmp_path):
    srcs = [write_jsonl(tmp_path / f"{n}.jsonl", make_records(n, 40, seed=2, words=25)) for n in ("hotpotqa", "trec_fine")]
    r = run_cli("--input", *map(str, srcs), "--tokenizer", toks["llama"], "--output-prefix", str(tmp_path / "w2"),
                "--mode", "finetune", "--workers", "2")
    assert r.returncode == 0, r.stderr
    for n, src in zip(("hotpotqa", "trec_fine"), srcs):
        preprocess_file(src, toks["llama"], tmp_path / "w1" / n, "finetune", progress=False)
        for ext in (".bin", ".idx"):
            assert (tmp_path / "w2" / f"{n}{ext}").read_bytes() == (tmp_path / "w1" / f"{n}{ext}").read_bytes()


def test_ensure_preprocessed_cache(toks, tmp_path):
    src = write_jsonl(tmp_path / "redpajama.jsonl", make_records("redpajama", 3, seed=0, words=20))
    a = ensure_preprocessed(src, toks["llama"], "pretrain", tmp_path / "cache")
    stamp = os.stat(f"{a}.bin").st_mtime_ns
    assert ensure_preprocessed(src, toks["llama"], "pretrain", tmp_path / "cache") == a
    assert os.stat(f"{a}.bin").st_mtime_ns == stamp and Path(a).name == "redpajama"
    assert ensure_preprocessed(src, toks["qwen3"], "pretrain", tmp_path / "cache") != a
    write_jsonl(src, make_records("redpajama", 4, seed=0, words=20))
    b = ensure_preprocessed(src, toks["llama"], "pretrain", tmp_path / "cache")
    assert b != a and read_manifest(b)["counts"]["kept"] == 4


def test_streaming_array_across_read_boundaries(tmp_path, monkeypatch):
    from acerag_megatron.data import records
    monkeypatch.setattr(records, "_READ_SIZE", 7)  # force elements to straddle many reads
    values = [{"text": f"doc {i} " * (i % 5), "n": i} for i in range(40)]
    src = tmp_path / "a.json"
    src.write_text("\n\n[\n" + ",\n".join(json.dumps(v, indent=1) for v in values) + "\n]\n")
    got = list(records.iter_raw_records(src))
    assert [r.value for r in got] == values and all(r.error is None for r in got)
    expected_lines, line = [], 4
    for v in values:
        expected_lines.append(line)
        line += json.dumps(v, indent=1).count("\n") + 1
    assert [r.line for r in got] == expected_lines
    src.write_text('[{"text": "a"}, {"text": "b" ')
    got = list(records.iter_raw_records(src))
    assert got[0].value == {"text": "a"} and got[1].error.startswith("malformed JSON")
