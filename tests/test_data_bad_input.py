"""Bad input through tools/preprocess_data.py: counted and never silently lost (read = kept + dropped for
every input shape), one-line errors under --strict and for files that give no records."""
import gzip
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from acerag_megatron import CONTEXT_TAG  # noqa: E402
from acerag_megatron.data import records  # noqa: E402
from acerag_megatron.data.chat import encode_text, load_tokenizer  # noqa: E402
from acerag_megatron.tiny.corpus import make_records  # noqa: E402
from acerag_megatron.tiny.tokenizers import make_tiny_tokenizer  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("preprocess_data_cli", ROOT / "tools" / "preprocess_data.py")
cli = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cli)


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return str(make_tiny_tokenizer("llama", tmp_path_factory.mktemp("tok")))


def texts(n, start=0):
    return [{"text": f"document {i} says hello there and more words"} for i in range(start, start + n)]


def jsonl(records_):
    return "".join(json.dumps(r) + "\n" for r in records_)


def array_of(elements: list[str]) -> str:
    return "[\n" + ",\n".join(elements) + "\n]\n"


def run(tok, inputs, out, mode="pretrain", *extra, capfd=None):
    """The CLI's main() in this process: (exit status, stderr lines)."""
    rc = cli.main(["--input", *map(str, inputs), "--tokenizer", tok, "--output-prefix", str(out), "--mode", mode,
                   "--no-progress", *extra])
    return rc, capfd.readouterr().err.strip().splitlines()


def counts(prefix):
    c = json.loads(Path(f"{prefix}.json").read_text())["counts"]
    assert c["read"] == c["kept"] + sum(c["dropped"].values()), c
    return c


def kept_texts(tok, prefix):
    from megatron.core.datasets.indexed_dataset import IndexedDataset
    ds = IndexedDataset(str(prefix), mmap=True)
    t = load_tokenizer(tok, add_context_tag=False)
    return [t.decode(ds[i].astype(np.int64).tolist(), skip_special_tokens=True) for i in range(len(ds))]


GOOD = [json.dumps(r) for r in texts(10)]
ARRAYS = {  # name -> (file text, expected drops); GOOD[4] is replaced or damaged in each
    "truncated_element": (array_of(GOOD[:4] + ['{"text": "cut off here'] + GOOD[5:]), {"malformed_json": 1}),
    "single_quotes": (array_of(GOOD[:4] + ["{'text': 'python, not json'}"] + GOOD[5:]), {"malformed_json": 1}),
    "missing_comma": ("[\n" + ",\n".join(GOOD[:4]) + "\n" + ",\n".join(GOOD[4:]) + "\n]\n", {"malformed_json": 1}),
    # The bad element holds a list of objects: two of them read as (dropped) records of their own.
    "nested_objects": (array_of(GOOD[:4] + ['{"text": "x", "turns": [{"a": 1}, {"b": 2}, {"c": 3}] oops}'] + GOOD[5:]),
                       {"malformed_json": 2, "missing_field": 2}),
    "trailing_content": (array_of(GOOD[:4] + GOOD[5:]) + "garbage\n", {"malformed_json": 1}),
    "unterminated": ("[\n" + ",\n".join(GOOD[:4] + GOOD[5:]) + "\n", {"malformed_json": 1}),
    "non_utf8_element": (None, {"not_utf8": 1}),
}


def write_arrays(folder: Path) -> dict[str, Path]:
    paths = {}
    for name, (text, _) in ARRAYS.items():
        path = folder / f"{name}.json"
        if text is None:  # a Latin-1 e-acute in element 5: not UTF-8
            path.write_bytes(array_of(GOOD[:4] + ['{"text": "cafe"}'] + GOOD[5:]).encode().replace(b"cafe", b"caf\xe9"))
        else:
            path.write_text(text)
        paths[name] = path
    return paths


def test_json_array_recovers_after_a_bad_element(tok, tmp_path, capfd):
    (tmp_path / "raw").mkdir()
    paths = write_arrays(tmp_path / "raw")
    rc, err = run(tok, paths.values(), tmp_path / "out", capfd=capfd)
    assert rc == 0, err
    good_texts = [r["text"] for r in texts(10)]
    for name, (_, drops) in ARRAYS.items():
        c = counts(tmp_path / "out" / name)
        assert c["dropped"] == drops, name
        assert kept_texts(tok, tmp_path / "out" / name) == good_texts[:4] + good_texts[5:], name


def test_array_recovery_across_read_boundaries(tmp_path, monkeypatch):
    paths = write_arrays(tmp_path)
    expected = {n: [(r.line, r.value, r.reason if r.error else None) for r in records.iter_raw_records(p)]
                for n, p in paths.items()}
    monkeypatch.setattr(records, "_READ_SIZE", 5)  # every element and separator straddles reads
    for name, path in paths.items():
        got = [(r.line, r.value, r.reason if r.error else None) for r in records.iter_raw_records(path)]
        assert got == expected[name], name
    assert [line for line, _, _ in expected["truncated_element"]] == list(range(2, 12))


def test_jsonl_across_read_boundaries(tmp_path, monkeypatch):
    values = [{"text": "naïve café ✓ " * (i % 4), "i": i} for i in range(30)]
    data = jsonl(values).encode()
    data = data.replace(b'"i": 7}', b'"i": 7, "x": "\xff"}')  # one undecodable line among multi-byte ones
    src = tmp_path / "a.jsonl"
    src.write_bytes(data)
    expected = [(i + 1, None if i == 7 else v) for i, v in enumerate(values)]
    for size in (1, 2, 5, 1 << 20):  # multi-byte characters and lines cut anywhere
        monkeypatch.setattr(records, "_READ_SIZE", size)
        got = list(records.iter_raw_records(src))
        assert [(r.line, r.value) for r in got] == expected, size
        assert got[7].reason == "not_utf8"


def test_bad_bytes_and_damaged_archives_keep_the_rest(tok, tmp_path, capfd):
    raw = tmp_path / "raw"
    raw.mkdir()
    lines = jsonl(texts(10)).encode().splitlines(keepends=True)
    lines[3] = lines[3].replace(b"hello", b"hel\xfflo")
    (raw / "bad_byte.jsonl").write_bytes(b"".join(lines))
    many = texts(300)
    packed = gzip.compress(jsonl(many).encode())
    (raw / "truncated.jsonl.gz").write_bytes(packed[: len(packed) * 2 // 3])
    (raw / "trailing_garbage.jsonl.gz").write_bytes(gzip.compress(jsonl(texts(5)).encode()) + b"not gzip")
    (raw / "plain_named_gz.jsonl.gz").write_text(jsonl(texts(5)))
    (raw / "bom.jsonl").write_bytes(b"\xef\xbb\xbf" + jsonl(texts(3)).encode())
    rc, err = run(tok, sorted(raw.iterdir()), tmp_path / "out", capfd=capfd)
    assert rc == 0, err
    out = tmp_path / "out"
    assert counts(out / "bad_byte") == {"read": 10, "kept": 9, "dropped": {"not_utf8": 1}, "kept_with_warning": {}}
    assert any("bad_byte.jsonl:4: skipped: not valid UTF-8 (byte 0xff" in e for e in err)
    c = counts(out / "truncated")
    assert c["dropped"] == {"truncated_archive": 1} and 0 < c["kept"] < 300
    assert kept_texts(tok, out / "truncated") == [r["text"] for r in many[: c["kept"]]]
    assert any(f"truncated.jsonl.gz:{c['kept'] + 1}: skipped: compressed input ends early" in e for e in err)
    assert counts(out / "trailing_garbage")["dropped"] == {"corrupt_archive": 1}
    assert counts(out / "trailing_garbage")["kept"] == 5
    assert counts(out / "plain_named_gz") == {"read": 5, "kept": 5, "dropped": {}, "kept_with_warning": {}}
    assert kept_texts(tok, out / "bom") == [r["text"] for r in texts(3)]


def test_strict_stops_with_one_line(tok, tmp_path):
    src = tmp_path / "bad_byte.jsonl"
    src.write_bytes(jsonl(texts(3)).encode() + b'{"text": "\xc3("}\n')
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "preprocess_data.py"), "--input", str(src),
                        "--tokenizer", tok, "--output-prefix", str(tmp_path / "out" / "x"), "--mode", "pretrain",
                        "--strict", "--no-progress"], capture_output=True, text=True,
                       env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [f"error: {src}:4: not valid UTF-8 (byte 0xc3 at column 11)"]
    assert list((tmp_path / "out").iterdir()) == []


def test_strict_truncated_archive(tok, tmp_path, capfd):
    src = tmp_path / "t.jsonl.gz"
    packed = gzip.compress(jsonl(texts(50)).encode())
    src.write_bytes(packed[:-30])
    rc, err = run(tok, [src], tmp_path / "out" / "t", "pretrain", "--strict", capfd=capfd)
    assert rc == 2 and len(err) == 1
    assert err[0].startswith(f"error: {src}:") and "truncated archive" in err[0]


PRETTY = json.dumps({"text": "one object", "meta": {"a": 1}}, indent=2)
LONGALPACA = make_records("longalpaca", 3, seed=0, words=20)


@pytest.mark.parametrize("name,content,mode,message", [
    ("empty", "", "pretrain", "no records (empty input)"),
    ("blank", "  \n\n \t\n", "pretrain", "no records (empty input)"),
    ("empty_array", "[ ]", "finetune", "no records (empty input)"),
    ("pretty", PRETTY, "pretrain", "expected a JSON array of objects or JSONL"),
    ("pretrain_as_finetune", jsonl(texts(4)), "finetune", "these look like pretrain records, not finetune ones"),
    ("finetune_as_pretrain", jsonl(LONGALPACA), "pretrain", "these look like finetune records, not pretrain ones"),
])
def test_no_records_is_one_line_error_unless_allowed(tok, tmp_path, capfd, name, content, mode, message):
    src = tmp_path / f"{name}.json"
    src.write_text(content)
    rc, err = run(tok, [src], tmp_path / "out" / name, mode, capfd=capfd)
    assert rc == 2 and len(err) == 1, err
    assert err[0].startswith(f"error: {src}: ") and message in err[0] and err[0].endswith("nothing written")
    assert list((tmp_path / "out").iterdir()) == []
    rc, err = run(tok, [src], tmp_path / "out" / name, mode, "--allow-empty", capfd=capfd)
    assert rc == 0, err
    c = counts(tmp_path / "out" / name)
    assert c["kept"] == 0 and c["read"] == {"pretty": PRETTY.count("\n") + 1, "pretrain_as_finetune": 4,
                                            "finetune_as_pretrain": 3}.get(name, 0)


def test_empty_context_kept_with_warning(tok, tmp_path, capfd):
    conv = json.loads(json.dumps(LONGALPACA[0]))
    conv["conversations"][0]["context"] = ""
    retrieval = {"query": "who?", "key": [], "answers": ["nobody"]}
    src = tmp_path / "mixed.jsonl"
    src.write_text(jsonl(LONGALPACA + [conv, retrieval]))
    assert CONTEXT_TAG in conv["conversations"][0]["prompt"]
    rc, err = run(tok, [src], tmp_path / "mixed", "finetune", capfd=capfd)
    assert rc == 0, err
    assert counts(tmp_path / "mixed") == {"read": 5, "kept": 5, "dropped": {},
                                          "kept_with_warning": {"empty_context": 2}}
    assert err[-1].endswith("kept with warning {'empty_context': 2} -> " + str(tmp_path / "mixed"))
    from acerag_megatron.data.dataset import CompressiveDataset, SampleConfig
    ds = CompressiveDataset([str(tmp_path / "mixed")], SampleConfig(window_mode=False), seed=0)
    assert "mixed: records 5 (with warning: empty_context 2)," in ds.describe()


def test_unwritable_output_is_one_line(tok, tmp_path, capfd):
    src = tmp_path / "rp.jsonl"
    src.write_text(jsonl(texts(2)))
    (tmp_path / "file").write_text("in the way")
    rc, err = run(tok, [src], tmp_path / "file" / "rp", capfd=capfd)
    assert rc == 2 and len(err) == 1 and err[0].startswith(f"error: {tmp_path / 'file'}"), err
